"""Rendering and evaluating avatars: render a split or a cross-reenactment, PSNR/SSIM/LPIPS."""

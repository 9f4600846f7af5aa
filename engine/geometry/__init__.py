"""Geometry shared by every room: rotations, camera conventions, triangle-mesh frames, UV sampling."""

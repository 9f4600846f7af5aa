"""Builds the extension zip with Blender's own extension builder, and optionally installs it.

    python build.py                               # dist/fate_avatar-<version>.zip, validated
    python build.py --install USER_RESOURCES_DIR  # ... then install + enable it there

Uses ``blender_ext.py`` shipped with Blender (the ``bpy`` wheel has it at
``bpy/<version>/scripts/addons_core/bl_pkg/cli/blender_ext.py``), run with the same Python:
``build --source-dir . --output-dir dist`` then ``validate ZIP``. ``--install`` starts a fresh
Python that sets ``BLENDER_USER_RESOURCES`` before importing bpy and calls
``bpy.ops.extensions.package_install_files(filepath=ZIP, repo='user_default',
enable_on_install=True)``, then saves the user preferences so the add-on stays enabled (Blender
loads them at startup; a bpy-module session after ``bpy.ops.wm.read_userpref()``).
A Blender executable works too: ``--blender /path/to/blender`` runs the builder as
``blender --command extension build ...``.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent

_INSTALL_SCRIPT = r"""
import os, sys
zip_path = sys.argv[1]
import bpy  # BLENDER_USER_RESOURCES is already set in the environment
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
import addon_utils
name = "bl_ext.user_default." + sys.argv[2]
loaded, enabled = addon_utils.check(name)
if not enabled:
    raise SystemExit(f"{name} was installed but is not enabled")
bpy.ops.wm.save_userpref()
print("installed", name, "into", os.environ["BLENDER_USER_RESOURCES"])
"""


def manifest(root: Path = ROOT) -> dict:
    with open(root / "blender_manifest.toml", "rb") as f:
        return tomllib.load(f)


def find_blender_ext() -> Path:
    """``blender_ext.py`` inside the installed ``bpy`` package (without importing bpy)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        raise SystemExit("bpy is not installed in this Python (pip install bpy), and no --blender was given")
    pkg = Path(spec.origin).resolve().parent
    hits = sorted(glob.glob(str(pkg / "*" / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py")))
    if not hits:  # bpy's __init__ may live in <version>/scripts/modules/bpy
        hits = sorted(glob.glob(str(pkg.parents[2] / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py")))
    if not hits:
        raise SystemExit(f"blender_ext.py not found under {pkg}")
    return Path(hits[-1])


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"command failed with exit code {proc.returncode}: {' '.join(cmd)}")


def build(out_dir: Path = ROOT / "dist", blender: str | None = None) -> Path:
    """Builds and validates ``<out_dir>/<id>-<version>.zip``; returns its path."""
    m = manifest()
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{m['id']}-{m['version']}.zip"
    if zip_path.exists():
        zip_path.unlink()
    if blender:
        base = [blender, "--factory-startup", "--command", "extension"]
    else:
        base = [sys.executable, str(find_blender_ext())]
    _run(base + ["build", "--source-dir", str(ROOT), "--output-dir", str(out_dir)])
    if not zip_path.is_file():
        raise SystemExit(f"the builder did not write {zip_path}")
    _run(base + ["validate", str(zip_path)])
    return zip_path


def install(zip_path: Path, user_resources: Path) -> None:
    """Installs and enables the zip in a Blender user-resources folder (fresh Python process)."""
    user_resources.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user_resources.resolve()))
    proc = subprocess.run([sys.executable, "-c", _INSTALL_SCRIPT, str(zip_path.resolve()), manifest()["id"]],
                          env=env)
    if proc.returncode != 0:
        raise SystemExit(f"installing {zip_path} failed (exit code {proc.returncode})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "dist", help="where the zip goes")
    parser.add_argument("--install", type=Path, metavar="USER_RESOURCES_DIR",
                        help="install and enable the zip into this BLENDER_USER_RESOURCES folder")
    parser.add_argument("--blender", help="use this Blender executable's builder instead of the bpy module's")
    args = parser.parse_args(argv)
    zip_path = build(args.output_dir, args.blender)
    print(f"built {zip_path}")
    if args.install:
        install(zip_path, args.install)
    return 0


if __name__ == "__main__":
    sys.exit(main())

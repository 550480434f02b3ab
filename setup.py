"""Only what pyproject.toml cannot say: the browser tag and the admin UI's assets (static/ at the
top of the checkout, where the tag is edited and served from in development) go into the wheel
as package data of `collector` (collector/static/), where an installed signal-edge finds them."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithStatic(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "collector" / "static"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(__file__).resolve().parent / "static", target)


setup(cmdclass={"build_py": BuildWithStatic})

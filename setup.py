"""Build hook: ship the top-level webhook.yaml inside the wheel, as app/spec/webhook.yaml.

Everything else about the build is in pyproject.toml. webhook.yaml stays at the top of
the repository, the single source of truth; a wheel needs a copy inside the package
(app.spec reads the top-level file from a checkout and this copy once installed). The
copy is written into the build directory only, never into the source tree, and not
for an editable install, which reads the top-level file in place.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SPEC = Path(__file__).resolve().parent / "webhook.yaml"
PACKAGED_SPEC = Path("app", "spec", "webhook.yaml")  # relative to the build directory


class BuildPyWithSpec(build_py):
    """setuptools' build_py, then a copy of webhook.yaml into the built package."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / PACKAGED_SPEC
            self.mkpath(str(target.parent))
            self.copy_file(str(SPEC), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            outputs.append(str(Path(self.build_lib) / PACKAGED_SPEC))
        return outputs


setup(cmdclass={"build_py": BuildPyWithSpec})

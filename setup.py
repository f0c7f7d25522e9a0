"""Build hook: the wheel ships the checkout's cards, class lists, suites and reported numbers as package data
under xdomain_bench/resources/, copied from where they live in the checkout (methods/, datasets/,
benchmarks/), which stays the single source of truth. src/xdomain_bench/paths.py reads either place."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
RESOURCES = {  # folder under xdomain_bench/resources -> (checkout folder, file pattern)
    "methods": ("methods", "*.yaml"),
    "datasets": ("datasets", "*.yaml"),
    "datasets/splits": ("datasets/splits", "*.txt"),
    "suites": ("benchmarks/suites", "*.yaml"),
    ".": ("benchmarks", "reported.csv"),
}


class BuildWithResources(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout itself
            return
        target = Path(self.build_lib) / "xdomain_bench" / "resources"
        for dest, (source, pattern) in RESOURCES.items():
            files = sorted((HERE / source).glob(pattern))
            if not files:
                raise RuntimeError(f"no {source}/{pattern} to ship; build from a checkout or its sdist")
            self.mkpath(str(target / dest))
            for path in files:
                self.copy_file(str(path), str(target / dest / path.name))


setup(cmdclass={"build_py": BuildWithResources})

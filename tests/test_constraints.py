"""constraints.txt (what `make install` installs) against setup.py and the installed packages."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).parents[1] / "constraints.txt"
EXTRAS = ("test", "gp", "xgboost")  # the ones make install installs, and their twins


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"expected a pin (==), got {line!r}"
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def test_every_requirement_of_setup_py_is_pinned_within_its_range():
    pins = _pins()
    for line in requires("fmsearch"):
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": e}) for e in EXTRAS):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is required by setup.py but not pinned: make constraints"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"expected {name} {requirement.specifier} (setup.py), got {pins[name]} in "
            "constraints.txt: make constraints"
        )


def test_the_installed_packages_are_the_pinned_ones():
    """Stale pins: .venv was upgraded (and the suite run with that) but not pinned again."""
    drifted = []
    for name, pinned in _pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:  # pinned for another platform or extra
            continue
        if installed != pinned:
            drifted.append(f"{name} {installed} (pinned {pinned})")
    assert not drifted, "installed differs from constraints.txt, run make constraints: " + (
        ", ".join(drifted)
    )

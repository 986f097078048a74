"""Plant model files: the demo file loads; bad files fail fast naming file, path, line and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from andon.plant import PlantModelError, SixBigLoss, load_plant_model, parse_plant_model

GOOD = """
name: t
sites:
  - id: s1
    timezone: Europe/Berlin
    lines:
      - id: l1
        takt_time_s: 60
        machines:
          - id: m1
            ideal_cycle_time_s: 50
            buffer_after: {capacity: 10, normal_fill: 5}
          - id: m2
            ideal_rate_per_min: 1.2
reasons:
  - category: Mech
    reasons:
      - {code: jam, loss: small_stops}
"""


def test_demo_plant_loads(demo_plant):
    line = demo_plant.line("line1")
    assert [m.id for m in line.machines_in_order] == [f"L1-M{i}" for i in range(1, 7)]
    assert demo_plant.machine("L1-M2").ideal_cycle_for("B") == 57
    assert demo_plant.machine("L1-M2").ideal_cycle_for(None) == 54
    assert demo_plant.reason("motor-overload").failure
    assert demo_plant.reason("changeover").loss is SixBigLoss.SETUP_ADJUSTMENTS


def test_good_minimal_model():
    m = parse_plant_model(GOOD)
    assert m.machine("m2").ideal_cycle_s == pytest.approx(50.0)
    assert m.line_of_machine("m2").id == "l1"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("ideal_cycle_time_s: 50", "ideal_cycle_time_s: -5",
         "sites[0].lines[0].machines[0].ideal_cycle_time_s (line 11): Input should be greater than 0"),
        ("timezone: Europe/Berlin", "timezone: Mars/Olympus",
         "sites[0].timezone (line 5): unknown time zone 'Mars/Olympus'"),
        ("{capacity: 10, normal_fill: 5}", "{capacity: 10, normal_fill: 50}",
         "sites[0].lines[0].machines[0].buffer_after (line 12): normal_fill (50) exceeds capacity (10)"),
        ("            ideal_rate_per_min: 1.2", "            name: no speed",
         "sites[0].lines[0].machines[1] (line 13): give ideal_cycle_time_s or ideal_rate_per_min"),
        ("takt_time_s: 60", "takt: 60", "sites[0].lines[0].takt (line 8): Extra inputs are not permitted"),
        ("loss: small_stops", "loss: coffee", "reasons[0].reasons[0].loss (line 18): Input should be"),
        ("id: m2", "id: m1", "machine id 'm1' is used more than once"),
    ],
)
def test_bad_plant_files_name_file_path_line_and_problem(tmp_path: Path, old: str, new: str, expected: str):
    assert old in GOOD
    f = tmp_path / "plant.yaml"
    f.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(PlantModelError) as info:
        load_plant_model(f)
    msg = str(info.value)
    assert msg.startswith(str(f)), msg
    assert expected in msg, msg


def test_yaml_syntax_error_names_line(tmp_path: Path):
    f = tmp_path / "p.yaml"
    f.write_text(GOOD.replace("takt_time_s: 60", "takt_time_s: [60"))
    with pytest.raises(PlantModelError, match=r"p\.yaml: line \d+, column \d+: not valid YAML"):
        load_plant_model(f)


def test_missing_file_and_unknown_fault_reason(tmp_path: Path):
    with pytest.raises(PlantModelError, match="cannot read plant model file"):
        load_plant_model(tmp_path / "nope.yaml")
    bad = GOOD.replace("ideal_rate_per_min: 1.2", "ideal_rate_per_min: 1.2\n            fault_map: {E1: nosuch}")
    with pytest.raises(PlantModelError, match="fault_map\\['E1'\\] names unknown reason 'nosuch'"):
        parse_plant_model(bad, "x.yaml")


def test_toml_plant_file(tmp_path: Path):
    f = tmp_path / "p.toml"
    f.write_text(
        'name = "t"\n[[sites]]\nid = "s"\n[[sites.lines]]\nid = "l"\ntakt_time_s = 30\n'
        '[[sites.lines.machines]]\nid = "m"\nideal_cycle_time_s = 20\n'
    )
    assert load_plant_model(f).machine("m").ideal_cycle_s == 20

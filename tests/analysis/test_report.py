import re
from pathlib import Path

from cnnlab.analysis.report import cost_section

REPORT = Path(__file__).resolve().parents[2] / "report" / "README.md"


def rows_glued_to_tables(markdown: str) -> list[str]:
    """Lines that directly follow a table row without being one: Markdown reads them as the table's last row."""
    lines = markdown.splitlines()
    return [b for a, b in zip(lines, lines[1:]) if a.startswith("|") and b.strip() and not b.startswith("|")]


def test_the_check_sees_a_label_glued_to_a_table():
    assert rows_glued_to_tables("| a |\n|---|\n| 1 |\n`resnet`:\n") == ["`resnet`:"]
    assert rows_glued_to_tables("| a |\n|---|\n| 1 |\n\n`resnet`:\n") == []


def test_every_cost_table_ends_before_the_next_label(tmp_path):
    section = cost_section(tmp_path, ["basic_cnn", "resnet"])
    rules = [line for line in section.splitlines() if re.fullmatch(r"\|[-:|]+\|", line)]
    assert len(rules) == 3  # the Inception block table, then one per model
    assert rows_glued_to_tables(section) == []
    assert (tmp_path / "cost.png").stat().st_size > 0


def test_the_committed_report_has_no_label_glued_to_a_table():
    assert rows_glued_to_tables(REPORT.read_text()) == []


def test_the_report_tells_each_stage_with_the_time_its_later_stages_are_expected_to_take():
    from cnnlab.analysis.report import Stages

    now = [0.0]
    said = []
    took = []  # what each finished training took beyond its budget, as make_report keeps it
    stages = Stages(said.append, clock=lambda: now[0])
    stages.add("training a", lambda: 60 + (sum(took) / len(took) if took else 5))
    stages.add("training b", lambda: 60 + (sum(took) / len(took) if took else 5))
    stages.add("depth", lambda: 30)
    with stages.stage():
        now[0] += 62
        took.append(2)
    with stages.stage():
        now[0] += 61
    with stages.stage():
        now[0] += 40
    assert said == ["report: training a (1 of 3; about 2.7 min left)",  # 65 + 65 + 30 s
                    "report: training b (2 of 3; about 92 s left)",  # its guess now 62 s: what the first took
                    "report: depth (3 of 3; about 30 s left)"]
    assert stages.summary() == "report: done in 2.7 min (expected at the start: 2.7 min)"

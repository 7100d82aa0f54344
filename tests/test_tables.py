from cnnlab.tables import format_table


def test_plain_table_aligns_numbers_right_and_text_left():
    out = format_table(["model", "acc"], [["resnet", "99.60%"], ["basic_cnn", "9.2%"]]).splitlines()
    assert out[0] == "model         acc"
    assert out[2] == "resnet     99.60%"
    assert out[3] == "basic_cnn    9.2%"


def test_markdown_table_has_alignment_row():
    out = format_table(["model", "n"], [["a", "1"]], markdown=True).splitlines()
    assert out[0] == "| model | n |"
    assert out[1] == "|-------|--:|"
    assert out[2] == "| a     | 1 |"

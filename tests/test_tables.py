from cnnlab.tables import display_width, format_table


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


def test_chinese_cells_line_up_by_display_width():
    # Each Chinese character takes two terminal columns; padding by len() would push later columns left.
    rows = [["猫", "cat", "99.1%"], ["小鸟", "bird", "9.0%"], ["dog", "狗狗狗", "50.0%"]]
    plain = format_table(["类别", "name", "acc"], rows).splitlines()
    assert len({display_width(line) for line in plain}) == 1
    assert plain[2] == "猫    cat     99.1%"
    md = format_table(["类别", "name", "acc"], rows, markdown=True).splitlines()
    assert len({tuple(display_width(cell) for cell in line.split("|")) for line in md}) == 1


def test_display_width_counts_wide_characters_twice_and_combining_marks_not_at_all():
    assert display_width("abc") == 3
    assert display_width("猫狗") == 4
    assert display_width("ＡＢ") == 4  # fullwidth Latin
    assert display_width("e\u0301") == 1  # e + combining acute accent

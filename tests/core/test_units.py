import pytest

from deepvis import Unit, UnitError, parse_unit


@pytest.mark.parametrize("text, unit", [
    ("blocks.5:42", Unit("blocks.5", 42)),
    ("features.10:7@6,6", Unit("features.10", 7, (6, 6))),
    ("inception_3a/1x1:3", Unit("inception_3a/1x1", 3)),
    ("a:b:c:12@0, 3", Unit("a:b:c", 12, (0, 3))),  # colons inside layer names survive rpartition
    (" conv5:151 ", Unit("conv5", 151)),
])
def test_parse_and_print_round_trip(text, unit):
    parsed = parse_unit(text)
    assert parsed == unit
    assert parse_unit(str(parsed)) == parsed


@pytest.mark.parametrize("bad", ["blocks.5", ":3", "blocks.5:-1", "blocks.5:x", "blocks.5:3@1", "blocks.5:3@a,b",
                                 "blocks.5:3@1,2,3", "", "blocks.5:"])
def test_malformed_units_name_the_value(bad):
    with pytest.raises(UnitError) as info:
        parse_unit(bad)
    assert repr(bad) in str(info.value)
    assert "\n" not in str(info.value)


def test_unit_at_position():
    assert str(parse_unit("fc8:3").at(2, 5)) == "fc8:3@2,5"

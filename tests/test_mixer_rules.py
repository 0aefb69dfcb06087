"""Mixer rule files: loading, the Access of a call, and an error for every malformed file."""

from __future__ import annotations

from importlib import resources

import pytest

import mixer_rules
from evedb.access import Access
from evedb.mixer import conflicts
from mixer_rules import (KeyRule, MixerRules, MixerRulesError, ProcedureRule, available_rules,
                         load_rules)


@pytest.fixture(scope="module")
def bank() -> MixerRules:
    return load_rules("example")


def write_rules(tmp_path, text: str, name: str = "app.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- loading ---------------------------------------------------------------------------------

def test_example_is_shipped():
    assert "example" in available_rules()


def test_load_example_by_name(bank):
    assert set(bank.procedures) == {"transfer", "deposit", "balance"}
    transfer = bank.procedures["transfer"]
    assert transfer == ProcedureRule(frozenset({"account"}), frozenset({"account"}),
                                     (KeyRule("account", (0,)), KeyRule("account", (1,))))
    assert not transfer.read_only
    assert bank.procedures["balance"].read_only
    assert "deposit" in bank and "nope" not in bank
    assert bank.source == "mixer_rules/example.toml"


def test_load_by_path_equals_load_by_name(bank, tmp_path):
    text = (resources.files(mixer_rules) / "example.toml").read_text(encoding="utf-8")
    by_path = load_rules(write_rules(tmp_path, text))
    assert dict(by_path.procedures) == dict(bank.procedures)
    assert load_rules(str(tmp_path / "app.toml")).procedures == by_path.procedures


def test_procedures_are_read_only(bank):
    with pytest.raises(TypeError):
        bank.procedures["x"] = ProcedureRule()  # type: ignore[index]


def test_unknown_name():
    with pytest.raises(MixerRulesError, match=r"no mixer rules named 'nosuchapp'.*example"):
        load_rules("nosuchapp")


def test_missing_path(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(MixerRulesError, match="missing.toml: cannot read"):
        load_rules(missing)


def test_empty_file_has_no_procedures(tmp_path):
    rules = load_rules(write_rules(tmp_path, "# nothing yet\n"))
    assert dict(rules.procedures) == {}
    assert rules.access("anything", ()).exclusive


def test_table_names_lower_cased(tmp_path):
    rules = load_rules(write_rules(tmp_path, """
[procedures.p]
reads = ["Item", "AUTHOR"]
writes = ["Item"]
keys = [ { table = "ITEM", arg = 0 } ]
"""))
    a = rules.access("p", (5,))
    assert a.reads == {"item", "author"}
    assert a.writes == {"item"}
    assert a.keys == {("item", (5,))}


# -- access() --------------------------------------------------------------------------------

def test_access_row_keys(bank):
    a = bank.access("transfer", (1, 2, 100))
    assert a == Access(reads=frozenset({"account"}), writes=frozenset({"account"}),
                       keys=frozenset({("account", (1,)), ("account", (2,))}),
                       exclusive=False, read_only=False)
    b = bank.access("balance", [7])
    assert b.read_only and not b.exclusive and b.writes == frozenset()
    assert b.keys == {("account", (7,))}


def test_access_drives_conflicts(bank):
    t12 = bank.access("transfer", (1, 2, 10))
    t34 = bank.access("transfer", (3, 4, 10))
    assert not conflicts(t12, t34)
    assert conflicts(t12, bank.access("deposit", (2, 5)))
    assert conflicts(t12, bank.access("balance", (1,)))
    assert not conflicts(bank.access("balance", (1,)), bank.access("balance", (1,)))


def test_missing_procedure_is_exclusive(bank):
    a = bank.access("drop_everything", (1,))
    assert a == Access(reads=frozenset(), writes=frozenset(), keys=frozenset(),
                       exclusive=True, read_only=False)


CART = """
[procedures.add_to_cart]
reads = ["shopping_cart", "shopping_cart_line", "item"]
writes = ["shopping_cart", "shopping_cart_line"]
keys = [ { table = "shopping_cart", arg = 0, modulo = 10 },
         { table = "shopping_cart_line", arg = 0, modulo = 10 } ]

[procedures.order_line]
reads = ["order_line"]
keys = [ { table = "order_line", arg = [1, 0] } ]
"""


def test_partition_keys(tmp_path):
    rules = load_rules(write_rules(tmp_path, CART))
    a = rules.access("add_to_cart", (123, "x"))
    assert a.keys == {("shopping_cart", ("%10", 3)), ("shopping_cart_line", ("%10", 3))}
    assert a.reads == {"shopping_cart", "shopping_cart_line", "item"}
    assert not a.read_only
    assert not conflicts(a, rules.access("add_to_cart", (124,)))
    assert conflicts(a, rules.access("add_to_cart", (13,)))
    assert rules.access("add_to_cart", (-7,)).keys == {
        ("shopping_cart", ("%10", 3)), ("shopping_cart_line", ("%10", 3))}


def test_compound_keys(tmp_path):
    rules = load_rules(write_rules(tmp_path, CART))
    assert rules.access("order_line", (1, 2)).keys == {("order_line", (2, 1))}


@pytest.mark.parametrize("args", [
    (),                  # position out of range
    ("abc",),            # modulo needs an int
    (1.5,),
    (True,),
    (None,),
])
def test_bad_args_widen_to_table_level(tmp_path, args):
    rules = load_rules(write_rules(tmp_path, CART))
    a = rules.access("add_to_cart", args)
    assert not a.exclusive
    assert a.keys == frozenset()  # both tables table-level now
    assert conflicts(a, rules.access("add_to_cart", (5,)))


def test_bad_args_widen_only_the_affected_table(tmp_path):
    rules = load_rules(write_rules(tmp_path, """
[procedures.p]
reads = ["a", "b"]
keys = [ { table = "a", arg = 0 }, { table = "a", arg = 2 }, { table = "b", arg = 1 } ]
"""))
    a = rules.access("p", (1, 2))   # arg 2 missing: table a whole, b keyed
    assert a.keys == {("b", (2,))}
    assert rules.access("p", (1, [2])).keys == frozenset()  # a: arg 2 missing; b: a list
    assert rules.access("p", (1, [2], 3)).keys == {("a", (1,)), ("a", (3,))}


@pytest.mark.parametrize("args", [None, 5, "ab", {"x": 1}, ([1],), ({},), (float("nan"),)])
def test_access_never_raises_on_client_input(bank, args):
    a = bank.access("balance", args)
    assert a.reads == {"account"} and a.keys == frozenset()


# -- malformed files -------------------------------------------------------------------------

MALFORMED = [
    ("[procedures.p\nreads = []", r"invalid TOML"),
    ("title = 'x'\n", r"unknown top-level key\(s\) \['title'\]"),
    ("procedures = 3\n", r"'procedures' must be a table"),
    ("[procedures]\np = 3\n", r"procedure 'p': must be a table"),
    ("[procedures.p]\nread = ['a']\n", r"procedure 'p': unknown key\(s\) \['read'\]"),
    ("[procedures.p]\nreads = 'a'\n", r"procedure 'p': 'reads' must be a list"),
    ("[procedures.p]\nwrites = [1]\n", r"procedure 'p': 'writes' must hold non-empty"),
    ("[procedures.p]\nreads = ['']\n", r"procedure 'p': 'reads' must hold non-empty"),
    ("[procedures.p]\nreads = ['a']\nkeys = { table = 'a', arg = 0 }\n",
     r"procedure 'p': 'keys' must be a list"),
    ("[procedures.p]\nreads = ['a']\nkeys = [3]\n", r"procedure 'p': keys\[0\] must be a table"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'b', arg = 0 }]\n",
     r"procedure 'p': keys\[0\]: table 'b' is in neither reads nor writes"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ arg = 0 }]\n",
     r"procedure 'p': keys\[0\]: missing 'table'"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a' }]\n",
     r"procedure 'p': keys\[0\]: missing 'arg'"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a', arg = 0, mod = 2 }]\n",
     r"procedure 'p': keys\[0\]: unknown key\(s\) \['mod'\]"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a', arg = -1 }]\n",
     r"procedure 'p': keys\[0\]: 'arg' positions must be >= 0"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a', arg = '0' }]\n",
     r"procedure 'p': keys\[0\]: 'arg' must be an argument position"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a', arg = [] }]\n",
     r"procedure 'p': keys\[0\]: 'arg' must be an argument position"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a', arg = true }]\n",
     r"procedure 'p': keys\[0\]: 'arg' must be an argument position"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a', arg = 0, modulo = -3 }]\n",
     r"procedure 'p': keys\[0\]: 'modulo' must be >= 1"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a', arg = 0, modulo = 0 }]\n",
     r"procedure 'p': keys\[0\]: 'modulo' must be >= 1"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a', arg = 0, modulo = 2.5 }]\n",
     r"procedure 'p': keys\[0\]: 'modulo' must be an integer"),
    ("[procedures.p]\nreads = ['a']\nkeys = [{ table = 'a', arg = [0, 1], modulo = 4 }]\n",
     r"procedure 'p': keys\[0\]: 'modulo' needs a single 'arg' position"),
    ("[procedures.ok]\nreads = ['a']\n[procedures.bad]\nreads = ['a']\n"
     "keys = [{ table = 'a', arg = 0 }, { table = 'z', arg = 1 }]\n",
     r"procedure 'bad': keys\[1\]: table 'z'"),
]


@pytest.mark.parametrize("text,message", MALFORMED)
def test_malformed_file(tmp_path, text, message):
    path = write_rules(tmp_path, text, "broken.toml")
    with pytest.raises(MixerRulesError, match=message) as info:
        load_rules(path)
    assert str(path) in str(info.value)  # the message names the file
    assert isinstance(info.value, ValueError)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(b"[procedures.p]\nreads = ['\xe9']\n")
    with pytest.raises(MixerRulesError, match="latin.toml: not UTF-8"):
        load_rules(path)


def test_from_dict_names_its_source():
    with pytest.raises(MixerRulesError, match=r"^cfg: procedure 'p': unknown key"):
        MixerRules.from_dict({"procedures": {"p": {"x": 1}}}, source="cfg")
    rules = MixerRules.from_dict({"procedures": {"p": {"reads": ["T"], "writes": ["t"]}}})
    assert rules.access("p", ()).writes == {"t"}
    with pytest.raises(MixerRulesError, match="expected a table"):
        MixerRules.from_dict([], source="cfg")  # type: ignore[arg-type]


def test_a_rule_without_keys_gives_one_access_for_every_call():
    rules = load_rules("tpcw")
    for name, rule in rules.procedures.items():
        first, second = rules.access(name, (1, 2, 3)), rules.access(name, ("x",))
        if rule.key_rules:
            continue
        assert first is second
        assert first == Access(reads=rule.reads, writes=rule.writes, keys=frozenset(), exclusive=False,
                               read_only=rule.read_only)
    assert any(not rule.key_rules for rule in rules.procedures.values())
    assert rules.access("no_such_procedure").exclusive

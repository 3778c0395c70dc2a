"""`pktchain apply`: file checks with lines, the plan, order, dry run, idempotence, the lab."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from pktchain.apply.plan import Action, compute_plan, read_current
from pktchain.apply.run import apply_file
from pktchain.apply.spec import ApplyFileError, load_apply_file, parse_apply_file
from pktchain.cli import main
from pktchain.client.neutron import NeutronClient
from pktchain.lab.lab import as_topology
from pktchain.lab.topology import Topology
from pktchain.sfc.resources import FlowClassifier, PortChain, PortPair, PortPairGroup
from support.fakeapi import FakeApi
from support.paths import EXAMPLES

DEMO = EXAMPLES / "sfc-demo.yaml"

RESOURCES = """\
port_pairs:
  PP1: {ingress: "vm1:in", egress: "vm1:out"}
  PP2: {ingress: "vm2:in", egress: "vm2:out"}
  PP3: {ingress: "vm3:in", egress: "vm3:out"}
port_pair_groups:
  PG1: {port_pairs: [PP1, PP2]}
  PG2: {port_pairs: [PP3]}
flow_classifiers:
  FC_demo:
    protocol: tcp
    destination_port_range_min: 80
    destination_port_range_max: 80
    logical_source_port: "source_vm:eth0"
port_chains:
  PC1: {port_pair_groups: [PG1, PG2], flow_classifiers: [FC_demo]}
"""


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as fake:
        yield fake


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chain.yaml"
    path.write_text(text)
    return path


def apply(api: FakeApi, path: Path, *extra: str) -> int:
    return main(["apply", "-f", str(path), "--url", api.url, *extra])


# -- the file ---------------------------------------------------------------------------


def test_every_mistake_reported_with_its_line(tmp_path: Path) -> None:
    text = """\
port_pairs:
  PP1: {ingress: "vm1:in"}
  PP2: {ingress: "vm2:in", egress: "vm2:out", service_function_parameters: {weight: heavy}}
port_pair_groups:
  PG1: {port_pairs: [PP1, PP9], colour: red}
flow_classifiers:
  FC: {protocol: sctp, destination_port_range_min: 99999, source_ip_prefix: 10.0.0.1/24}
port_chains:
  PC1: {port_pair_groups: [], chain_parameters: {symmetric: maybe}}
extra: 1
"""
    with pytest.raises(ApplyFileError) as caught:
        parse_apply_file(text, source="chain.yaml")
    found = {(i.line, i.field) for i in caught.value.issues}
    assert (2, "port_pairs.PP1.egress") in found
    assert (3, "port_pairs.PP2.service_function_parameters.weight") in found
    assert (5, "port_pair_groups.PG1.colour") in found
    assert (5, "port_pair_groups.PG1.port_pairs") in found  # PP9 is not declared
    assert (7, "flow_classifiers.FC.protocol") in found
    assert (7, "flow_classifiers.FC.destination_port_range_min") in found
    assert (7, "flow_classifiers.FC.source_ip_prefix") in found
    assert (9, "port_chains.PC1.port_pair_groups") in found
    assert (9, "port_chains.PC1.chain_parameters.symmetric") in found
    assert (10, "extra") in found
    message = str(caught.value)
    assert message.startswith(f"{len(caught.value.issues)} errors in chain.yaml:")
    assert "chain.yaml:7: flow_classifiers.FC.protocol:" in message


def test_bad_file_exits_2_and_sends_nothing(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "port_pairs:\n  PP1: {ingress: 3}\n  PP1: {}\n")
    assert apply(api, path) == 2
    err = capsys.readouterr().err
    assert "chain.yaml:2: port_pairs.PP1.egress: missing" in err
    assert "chain.yaml:3: port_pairs.PP1: duplicate key" in err
    assert api.requests == []


def test_invalid_yaml_names_its_line(tmp_path: Path) -> None:
    with pytest.raises(ApplyFileError) as caught:
        load_apply_file(write(tmp_path, "port_pairs:\n  PP1: [\n"))
    assert caught.value.issues[0].line is not None


def test_inline_topology_errors_carry_their_lines(tmp_path: Path) -> None:
    text = "topology:\n  lab: x\n  hosts:\n    h1:\n      interfaces:\n        eth0: {mtu: 5}\n"
    with pytest.raises(ApplyFileError) as caught:
        parse_apply_file(text, source="f.yaml")
    fields = {(i.line, i.field) for i in caught.value.issues}
    assert (6, "topology.hosts.h1.interfaces.eth0.mtu") in fields


def test_example_matches_the_demo_lab() -> None:
    from pktchain.demo.sfc import sfc_topology

    declared = load_apply_file(DEMO)
    assert declared.topology is not None
    assert declared.topology_file == EXAMPLES / "sfc-demo-lab.yaml"
    demo = as_topology(sfc_topology(declared.topology.name))
    assert dataclasses.replace(declared.topology, source="") == dataclasses.replace(demo, source="")
    names = [(r.kind.value, r.name) for r in declared.resources]
    assert names == [
        ("port_pair", "PP1"),
        ("port_pair", "PP2"),
        ("port_pair", "PP3"),
        ("port_pair_group", "PG1"),
        ("port_pair_group", "PG2"),
        ("flow_classifier", "FC_demo"),
        ("port_chain", "PC1"),
    ]


# -- plan and apply ---------------------------------------------------------------------


def test_creates_in_dependency_order_then_nothing(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, RESOURCES)
    assert apply(api, path) == 0
    out = capsys.readouterr().out
    assert "+ port_pair PP1" in out and "+ port_chain PC1" in out
    posts = [r.path.rsplit("/", 1)[1] for r in api.requests if r.method == "POST"]
    assert posts == ["port_pairs"] * 3 + ["port_pair_groups"] * 2 + [
        "flow_classifiers",
        "port_chains",
    ]
    model = api.model
    chain = model.resolve(PortChain, "PC1")
    assert [model.get(PortPairGroup, g).name for g in chain.port_pair_groups] == ["PG1", "PG2"]
    before = len(api.requests)
    assert apply(api, path) == 0
    assert capsys.readouterr().out.strip() == "nothing to change"
    assert all(r.method == "GET" for r in api.requests[before:])


def test_example_applies_and_is_idempotent(api: FakeApi) -> None:
    labs = FakeLabs(up=True)
    client = NeutronClient(api.url)
    lines: list[str] = []
    assert apply_file(DEMO, client, labs=labs, report=lines.append) == 0
    assert "+ port_chain PC1" in lines
    lines.clear()
    assert apply_file(DEMO, client, labs=labs, report=lines.append) == 0
    assert lines == ["nothing to change"]
    assert labs.brought_up == []


def test_dry_run_sends_nothing(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert apply(api, write(tmp_path, RESOURCES), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "+ port_pair_group PG1" in out and "dry run: 7 change(s) not applied" in out
    assert all(r.method == "GET" for r in api.requests)


def test_updates_what_the_api_can_update(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, RESOURCES)
    assert apply(api, path) == 0
    pc1_id = api.model.resolve(PortChain, "PC1").id
    changed = RESOURCES.replace("PG1: {port_pairs: [PP1, PP2]}", "PG1: {port_pairs: [PP2]}")
    changed = changed.replace("flow_classifiers: [FC_demo]}", "flow_classifiers: []}")
    write(tmp_path, changed)
    capsys.readouterr()
    assert apply(api, path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "~ port_pair_group PG1 port_pairs: [PP1, PP2] → [PP2]" in out
    assert "~ port_chain PC1 flow_classifiers: [FC_demo] → []" in out
    assert apply(api, path) == 0
    model = api.model
    assert model.resolve(PortChain, "PC1").id == pc1_id  # updated in place
    assert model.resolve(PortChain, "PC1").flow_classifiers == ()
    pg1 = model.resolve(PortPairGroup, "PG1")
    assert [model.get(PortPair, p).name for p in pg1.port_pairs] == ["PP2"]
    capsys.readouterr()
    assert apply(api, path) == 0
    assert capsys.readouterr().out.strip() == "nothing to change"


def test_read_only_change_replaces_and_reattaches(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, RESOURCES)
    assert apply(api, path) == 0
    old_fc = api.model.resolve(FlowClassifier, "FC_demo").id
    pc1 = api.model.resolve(PortChain, "PC1").id
    write(tmp_path, RESOURCES.replace("range_max: 80", "range_max: 88"))
    capsys.readouterr()
    assert apply(api, path) == 0
    out = capsys.readouterr().out
    assert "± flow_classifier FC_demo destination_port_range_max: 80 → 88" in out
    assert "cannot be updated" in out
    fc = api.model.resolve(FlowClassifier, "FC_demo")
    assert fc.id != old_fc and fc.destination_port_range_max == 88
    chain = api.model.resolve(PortChain, "PC1")
    assert chain.id == pc1 and chain.flow_classifiers == (fc.id,)
    assert apply(api, path) == 0
    assert capsys.readouterr().out.strip().endswith("nothing to change")


def test_replaced_group_replaces_its_chain(api: FakeApi, tmp_path: Path) -> None:
    path = write(tmp_path, RESOURCES)
    assert apply(api, path) == 0
    write(
        tmp_path,
        RESOURCES.replace(
            "PG2: {port_pairs: [PP3]}", "PG2: {port_pairs: [PP3], tap_enabled: true}"
        ),
    )
    declared = load_apply_file(path)
    current, ids = read_current(NeutronClient(api.url))
    plan = compute_plan(declared, current, ids)
    actions = {(c.kind.value, c.name): c.action for c in plan.changes}
    assert actions == {
        ("port_pair_group", "PG2"): Action.REPLACE,
        ("port_chain", "PC1"): Action.REPLACE,
    }
    assert apply(api, path) == 0
    assert api.model.resolve(PortPairGroup, "PG2").tap_enabled


def test_prune_deletes_in_reverse_order(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, RESOURCES)
    assert apply(api, path) == 0
    write(tmp_path, RESOURCES.split("port_pair_groups:", maxsplit=1)[0])
    capsys.readouterr()
    assert apply(api, path) == 0
    assert "nothing to change" in capsys.readouterr().out  # without --prune nothing goes
    before = len(api.requests)
    assert apply(api, path, "--prune") == 0
    out = capsys.readouterr().out
    assert "- port_pair_group PG1" in out and "- port_chain PC1" in out
    deleted = [r.path.split("/")[-2] for r in api.requests[before:] if r.method == "DELETE"]
    assert deleted == ["port_chains", "flow_classifiers", "port_pair_groups", "port_pair_groups"]
    assert [p.name for p in api.model.list(PortPair)] == ["PP1", "PP2", "PP3"]


def test_port_pair_moves_between_groups(api: FakeApi, tmp_path: Path) -> None:
    path = write(tmp_path, RESOURCES)
    assert apply(api, path) == 0
    moved = RESOURCES.replace("[PP1, PP2]", "[PP1]").replace("[PP3]}", "[PP3, PP2]}")
    write(tmp_path, moved)
    assert apply(api, path) == 0
    pg2 = api.model.resolve(PortPairGroup, "PG2")
    assert [api.model.get(PortPair, p).name for p in pg2.port_pairs] == ["PP3", "PP2"]


def test_unknown_port_names_line_and_exits_1(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, RESOURCES.replace('"vm3:in"', '"vm9:in"'))
    assert apply(api, path) == 1
    err = capsys.readouterr().err
    assert "chain.yaml:4: port_pairs.PP3.ingress: the node has no port 'vm9:in'" in err
    assert all(r.method == "GET" for r in api.requests)


def test_api_refusal_is_one_line(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, RESOURCES.replace('egress: "vm1:out"', 'egress: "vm2:out"'))
    assert apply(api, path) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pktchain apply: refused: ") and len(err.splitlines()) == 1


# -- the lab ----------------------------------------------------------------------------


class FakeLabs:
    def __init__(self, *, up: bool) -> None:
        self.is_running = up
        self.brought_up: list[str] = []

    def is_up(self, topology: Topology) -> bool:
        return self.is_running

    def up(self, topology: Topology) -> None:
        self.brought_up.append(topology.name)
        self.is_running = True


def test_lab_brought_up_when_down_and_node_asked_for(api: FakeApi) -> None:
    labs = FakeLabs(up=False)
    lines: list[str] = []
    assert apply_file(DEMO, NeutronClient(api.url), labs=labs, report=lines.append) == 0
    assert labs.brought_up == ["sfc-demo"]
    assert lines[0] == "+ lab sfc-demo"


def test_dry_run_does_not_bring_the_lab_up(api: FakeApi) -> None:
    labs = FakeLabs(up=False)
    lines: list[str] = []
    assert (
        apply_file(DEMO, NeutronClient(api.url), dry_run=True, labs=labs, report=lines.append) == 0
    )
    assert labs.brought_up == []
    assert lines[0].startswith("+ lab sfc-demo (would be brought up")


def test_no_node_says_how_to_start_one() -> None:
    with FakeApi() as closed:
        url = closed.url
    errors: list[str] = []
    status = apply_file(
        DEMO, NeutronClient(url), labs=FakeLabs(up=True), report=print, error=errors.append
    )
    assert status == 1
    assert errors[0].startswith(f"no pktchain API at {url}: is `pktchain node` running?")
    assert "pktchain node --topology" in errors[0] and "sfc-demo-lab.yaml" in errors[0]

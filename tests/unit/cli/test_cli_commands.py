"""The resource commands: options → requests, tables, JSON, errors and exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pktchain.cli import build_parser, main
from pktchain.client.options import client_token
from pktchain.errors import UsageError
from pktchain.sfc.resources import (
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    ServiceGraph,
)
from support.fakeapi import FakeApi


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as fake:
        yield fake


def run(api: FakeApi, *argv: str) -> int:
    return main([*argv[:2], "--url", api.url, *argv[2:]])


def demo_chain(api: FakeApi) -> None:
    for n in (1, 2, 3):
        assert (
            run(
                api,
                "port-pair",
                "create",
                f"PP{n}",
                "--ingress",
                f"vm{n}:in",
                "--egress",
                f"vm{n}:out",
            )
            == 0
        )
    assert (
        run(api, "port-pair-group", "create", "PG1", "--port-pair", "PP1", "--port-pair", "PP2")
        == 0
    )
    assert run(api, "port-pair-group", "create", "PG2", "--port-pair", "PP3") == 0
    assert (
        run(
            api,
            "flow-classifier",
            "create",
            "FC_demo",
            "--protocol",
            "tcp",
            "--destination-port",
            "80",
            "--logical-source-port",
            "source_vm:eth0",
        )
        == 0
    )
    assert (
        run(
            api,
            "port-chain",
            "create",
            "PC1",
            "--port-pair-group",
            "PG1",
            "--port-pair-group",
            "PG2",
            "--flow-classifier",
            "FC_demo",
        )
        == 0
    )


def test_demo_chain_built_by_names(api: FakeApi) -> None:
    demo_chain(api)
    model = api.model
    pg1 = model.resolve(PortPairGroup, "PG1")
    assert [model.get(PortPair, i).name for i in pg1.port_pairs] == ["PP1", "PP2"]
    fc = model.resolve(FlowClassifier, "FC_demo")
    assert (fc.destination_port_range_min, fc.destination_port_range_max) == (80, 80)
    assert fc.protocol is not None and fc.protocol.value == "tcp"
    chain = model.resolve(PortChain, "PC1")
    assert chain.flow_classifiers == (fc.id,)
    post = next(r for r in api.requests if r.method == "POST" and r.path.endswith("port_pairs"))
    assert post.body == {
        "port_pair": {
            "name": "PP1",
            "ingress": model.resolve(PortPair, "PP1").ingress,
            "egress": model.resolve(PortPair, "PP1").egress,
        }
    }


def test_options_become_body_fields(api: FakeApi) -> None:
    assert (
        run(
            api,
            "port-pair",
            "create",
            "PP1",
            "--ingress",
            "vm1:in",
            "--egress",
            "vm1:out",
            "--weight",
            "3",
            "--description",
            "first",
        )
        == 0
    )
    assert (
        run(
            api,
            "port-pair-group",
            "create",
            "PG1",
            "--port-pair",
            "PP1",
            "--lb-fields",
            "ip_src&ip_dst",
        )
        == 0
    )
    assert (
        run(
            api,
            "flow-classifier",
            "create",
            "FC",
            "--protocol",
            "udp",
            "--ethertype",
            "IPv4",
            "--source-port",
            "1000:2000",
            "--source-ip-prefix",
            "10.0.0.0/24",
            "--destination-ip-prefix",
            "10.0.1.0/24",
            "--logical-source-port",
            "source_vm:eth0",
            "--logical-destination-port",
            "dest_vm:eth0",
        )
        == 0
    )
    assert (
        run(
            api,
            "port-chain",
            "create",
            "PC1",
            "--port-pair-group",
            "PG1",
            "--flow-classifier",
            "FC",
            "--chain-parameters",
            "symmetric=true,correlation=mpls",
            "--chain-id",
            "7",
        )
        == 0
    )
    bodies = {r.path.rsplit("/", 1)[1]: r.body for r in api.requests if r.method == "POST"}
    assert bodies["port_pairs"]["port_pair"]["service_function_parameters"] == {"weight": 3}
    assert bodies["port_pairs"]["port_pair"]["description"] == "first"
    assert bodies["port_pair_groups"]["port_pair_group"]["port_pair_group_parameters"] == {
        "lb_fields": ["ip_src", "ip_dst"]
    }
    fc = bodies["flow_classifiers"]["flow_classifier"]
    assert (fc["source_port_range_min"], fc["source_port_range_max"]) == (1000, 2000)
    assert fc["logical_destination_port"] == api.model.resolve(Port, "dest_vm:eth0").id
    chain = bodies["port_chains"]["port_chain"]
    assert chain["chain_parameters"] == {"symmetric": True, "correlation": "mpls"}
    assert chain["chain_id"] == 7


def test_set_and_unset_edit_lists_like_the_openstack_client(api: FakeApi) -> None:
    demo_chain(api)
    model = api.model
    assert run(api, "port-chain", "set", "PC1", "--no-flow-classifier") == 0
    assert model.resolve(PortChain, "PC1").flow_classifiers == ()
    assert run(api, "port-chain", "set", "PC1", "--flow-classifier", "FC_demo") == 0
    assert run(api, "port-chain", "unset", "PC1", "--port-pair-group", "PG2") == 0
    chain = model.resolve(PortChain, "PC1")
    assert len(chain.flow_classifiers) == 1 and len(chain.port_pair_groups) == 1
    assert run(api, "port-pair-group", "unset", "PG1", "--port-pair", "PP1") == 0
    pg1 = model.resolve(PortPairGroup, "PG1")
    assert [model.get(PortPair, i).name for i in pg1.port_pairs] == ["PP2"]
    assert run(api, "port-pair-group", "set", "PG1", "--no-port-pair", "--port-pair", "PP1") == 0
    pg1 = model.resolve(PortPairGroup, "PG1")
    assert [model.get(PortPair, i).name for i in pg1.port_pairs] == ["PP1"]
    assert run(api, "port-pair", "set", "PP3", "--name", "PP3b", "--description", "x") == 0
    assert model.resolve(PortPair, "PP3b").description == "x"


def test_list_table_shows_names_of_references(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    demo_chain(api)
    capsys.readouterr()
    assert run(api, "port-chain", "list") == 0
    out = capsys.readouterr().out
    assert "PC1" in out and "PG1, PG2" in out and "FC_demo" in out
    assert run(api, "port-pair", "list") == 0
    out = capsys.readouterr().out
    assert "vm1:in" in out and "vm3:out" in out
    assert run(api, "flow-classifier", "show", "FC_demo") == 0
    out = capsys.readouterr().out
    assert "source_vm:eth0" in out and "destination_port_range_min" in out


def test_json_output(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    demo_chain(api)
    capsys.readouterr()
    assert run(api, "port-pair-group", "list", "--json") == 0
    groups = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in groups] == ["PG1", "PG2"]
    assert run(api, "port", "show", "vm1:in", "--json") == 0
    assert json.loads(capsys.readouterr().out)["mac_address"] == "02:00:00:00:10:01"
    assert run(api, "port-pair", "list", "--name", "PP2", "--json") == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == ["PP2"]


def test_api_refusal_is_one_line_naming_the_field(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "port-pair", "create", "PP1", "--ingress", "vm1:in", "--egress", "vm2:out") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("pktchain port-pair create: ")
    assert (
        run(
            api,
            "flow-classifier",
            "create",
            "FC",
            "--protocol",
            "tcp",
            "--source-ip-prefix",
            "10.0.0.1/24",
            "--logical-source-port",
            "source_vm:eth0",
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert "source_ip_prefix" in err and len(err.splitlines()) == 1


def test_unknown_name_and_in_use(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    demo_chain(api)
    assert run(api, "port-pair-group", "create", "PG3", "--port-pair", "PP9") == 1
    assert "no port pair named 'PP9'" in capsys.readouterr().err
    assert run(api, "port-pair-group", "delete", "PG1") == 1
    assert "PG1" in capsys.readouterr().err
    assert run(api, "port-chain", "delete", "PC1") == 0
    assert "deleted port_chain PC1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["flow-classifier", "create", "F", "--destination-port", "80:x"], "--destination-port"),
        (["flow-classifier", "create", "F", "--source-port", "90:80"], "MIN is above MAX"),
        (
            ["port-chain", "create", "C", "--port-pair-group", "G", "--chain-parameters", "x=1"],
            "--chain-parameters",
        ),
        (["port-chain", "create", "C"], "--port-pair-group"),
        (["port-pair", "set", "PP1"], "nothing to change"),
        (["service-graph", "create", "G", "--branching-point", "PC1"], "--branching-point"),
    ],
)
def test_option_mistakes_exit_2(
    api: FakeApi, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    if argv[1] == "set":
        run(api, "port-pair", "create", "PP1", "--ingress", "vm1:in", "--egress", "vm1:out")
    capsys.readouterr()
    assert run(api, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_no_api_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeApi() as closed:
        url = closed.url
    assert main(["port-pair", "list", "--url", url]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"pktchain port-pair list: no pktchain API at {url}: is `pktchain node` "
        "running? (Connection refused)"
    )


def test_url_and_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeApi(token="t0k") as api:
        monkeypatch.setenv("PKTCHAIN_URL", api.url)
        monkeypatch.setenv("PKTCHAIN_TOKEN", "t0k")
        assert main(["port", "list"]) == 0
    assert api.requests[0].token == "t0k"


@pytest.mark.parametrize(
    "command", [["port-pair", "list"], ["router", "show"], ["apply", "-f", "chains.yaml"]]
)
def test_every_api_command_takes_url_and_token_alike(
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("PKTCHAIN_URL", "PKTCHAIN_TOKEN", "PKTCHAIN_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(command)
    assert (args.url, client_token(args)) == ("http://127.0.0.1:9696", None)
    monkeypatch.setenv("PKTCHAIN_URL", "http://192.0.2.1:9696")
    monkeypatch.setenv("PKTCHAIN_TOKEN", "from-env")
    args = build_parser().parse_args(command)
    assert (args.url, client_token(args)) == ("http://192.0.2.1:9696", "from-env")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    token_file.chmod(0o600)
    monkeypatch.setenv("PKTCHAIN_TOKEN_FILE", str(token_file))
    assert client_token(build_parser().parse_args(command)) == "from-file"  # the file first
    args = build_parser().parse_args([*command, "--token-file", str(token_file)])
    assert client_token(args) == "from-file"
    assert capsys.readouterr().err == ""  # nothing to warn about
    args = build_parser().parse_args([*command, "--url", "http://[::1]:1", "--token", "t"])
    assert (args.url, client_token(args)) == ("http://[::1]:1", "t")
    assert "--token on the command line can be read by every user" in capsys.readouterr().err
    both = build_parser().parse_args([*command, "--token", "t", "--token-file", str(token_file)])
    with pytest.raises(UsageError, match="--token and --token-file exclude each other"):
        client_token(both)


def test_service_graph(api: FakeApi) -> None:
    demo_chain(api)
    run(
        api,
        "flow-classifier",
        "create",
        "FC2",
        "--protocol",
        "tcp",
        "--destination-port",
        "80",
        "--logical-source-port",
        "dest_vm:eth0",
    )
    assert (
        run(
            api,
            "port-chain",
            "create",
            "PC2",
            "--port-pair-group",
            "PG2",
            "--flow-classifier",
            "FC2",
        )
        == 0
    )
    status = run(api, "service-graph", "create", "SG", "--branching-point", "PC1:PC2")
    graphs = [r for r in api.requests if r.method == "POST" and r.path.endswith("service_graphs")]
    chains = graphs[0].body["service_graph"]["port_chains"]
    pc1 = api.model.resolve(PortChain, "PC1").id
    assert chains == {pc1: [api.model.resolve(PortChain, "PC2").id]}
    assert status == 0
    assert api.model.resolve(ServiceGraph, "SG").port_chains == {pc1: (chains[pc1][0],)}

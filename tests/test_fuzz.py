"""``sddf fuzz``: every target runs briefly and finds nothing; a broken component's bad input is a
finding, saved and replayed; a broken contract is a finding; --list names every target; and
regressions for what fuzzing found in pysddf."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from sddf.apps.systems import echo
from sddf.cli import load_system
from sddf.config import ConfigError, typed
from sddf.system import InvalidSystem, ProtectionDomain, SystemDescription
from sddf.timer.config import TimerDriverConfig
from sddf.tools.fuzz import TARGETS, main, quiet
from sddf.tools.fuzz_bench import Scenario
from sddf.tools.fuzz_checks import answers_ping
from sddf.tools.fuzz_input import Finding

pytestmark = pytest.mark.timeout(120)
TARGET_NAMES = ("driver", "virt_rx", "virt_tx", "copier", "client0", "client1", "timer", "netstack", "ppc",
                "config", "system")
SECONDS = "2.5"
MIN_EXECUTIONS = 10
BROKEN = f"{Path(__file__).parent / 'components' / 'fuzz_broken_system.py'}:consumer"
# decoded by the consumer's arena: operation 0 (forge descriptors) on queue 0, one descriptor
# (count 1 + 0, not drawn otherwise), pool 0, buffer 0, kind drawn (3 of 4) as "any" (2 of 3), its
# address all ones; the input ends, the producer notifies the consumer, which indexes its list with it
KNOWN_BAD = bytes([0, 0, 0, 0, 0, 0, 3, 2]) + b"\xff" * 8


def fuzz(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(list(args))
    return status, capsys.readouterr().out


def executions(out: str) -> int:
    found = re.search(r"(\d+) executions in [\d.]+ s \(([\d.]+)/s\)", out)
    assert found, out
    return int(found.group(1))


def test_list_names_every_target(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = fuzz(capsys, "--list")
    assert status == 0
    assert {line.split()[0] for line in out.splitlines()} == {*TARGET_NAMES, "SYSTEM:PD"}
    assert set(TARGETS) == set(TARGET_NAMES)


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_each_target_runs_and_finds_nothing(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = fuzz(capsys, name, "--seconds", SECONDS, "--seed", "1", "--engine", "hypothesis",
                       "--findings", str(tmp_path))
    assert status == 0, out
    assert executions(out) >= MIN_EXECUTIONS, out
    assert "0 findings" in out and not any(tmp_path.iterdir())


def test_replaying_a_known_bad_input_of_a_broken_component_is_a_finding(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(KNOWN_BAD)
    status, out = fuzz(capsys, BROKEN, "--replay", str(bad))
    assert status == 1
    assert "is a finding" in out and "IndexError" in out and "raised in PD 'consumer'" in out


def test_replaying_a_harmless_input_is_no_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harmless = tmp_path / "empty"
    harmless.write_bytes(b"")
    assert fuzz(capsys, BROKEN, "--replay", str(harmless)) == (0, f"sddf fuzz {BROKEN}: {harmless}: no finding\n")


def test_fuzzing_a_broken_component_saves_its_bug_once_and_replays_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = fuzz(capsys, BROKEN, "--runs", "300", "--seed", "1", "--engine", "hypothesis",
                       "--findings", str(tmp_path))
    assert status == 1 and "1 findings" in out and "IndexError" in out, out
    (saved,) = [p for p in tmp_path.iterdir() if p.suffix != ".txt"]
    assert "IndexError" in saved.with_name(saved.name + ".txt").read_text()
    assert fuzz(capsys, BROKEN, "--replay", str(saved))[0] == 1


def test_the_same_seed_runs_the_same_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [fuzz(capsys, BROKEN, "--runs", "100", "--seed", "4", "--engine", "hypothesis",
                 "--findings", str(tmp_path / str(i))) for i in range(2)]
    assert [status for status, _ in runs] == [1, 1]
    assert sorted(p.name for p in (tmp_path / "0").iterdir()) == sorted(p.name for p in (tmp_path / "1").iterdir())
    assert re.findall(r"\((\d+) inputs?\)", runs[0][1]) == re.findall(r"\((\d+) inputs?\)", runs[1][1])


def test_a_dotted_system_module_names_a_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = fuzz(capsys, "sddf.apps.systems.echo:net_virt_tx", "--runs", "3", "--seed", "1",
                       "--engine", "hypothesis", "--findings", str(tmp_path))
    assert status == 0 and executions(out) == 3, out


def test_an_unknown_target_or_pd_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="no target 'nope'"):
        main(["nope"])
    with pytest.raises(SystemExit, match="has no PD 'nobody'"):
        main(["echo:nobody"])


def test_a_broken_contract_is_a_finding() -> None:
    """A copier that keeps the shared rx buffers it copied from: the audit after a frame for its
    client (operation 5, a frame: not raw, to the second host, client1) finds one missing."""
    def leaky() -> SystemDescription:
        sdf = echo.system()
        sdf.pd("client1_copier").program = "components.fuzz_broken:LeakyCopier"
        return sdf
    with quiet(), pytest.raises(Finding, match=r"pool net_rx_data: 1 missing"):
        Scenario(leaky, "client1_copier", ("client1",), (answers_ping("client0"),))(bytes([5, 0, 1]))


def broken_system(program: str) -> SystemDescription:
    """The broken consumer's system with the consumer running ``program`` (of fuzz_broken.py)."""
    sdf = load_system(BROKEN.rpartition(":")[0])
    sdf.pd("consumer").program = f"fuzz_broken:{program}"
    return sdf


def test_a_component_that_grows_with_its_input_is_a_finding() -> None:
    with quiet(), pytest.raises(Finding, match=r"consumer\.frames grew from 8 to 5008 entries"):
        Scenario(lambda: broken_system("Hoarder"), "consumer")(b"")  # the input ends: the producer notifies once


def test_a_documented_refusal_is_no_finding() -> None:
    """Operation 2 (a header field) on queue 0: the tail (1 of 3) set to a drawn (1 of 2) 0x8000; the
    consumer's end, reporting to nobody, raises QueueProtocolError at every start: it stays down."""
    with quiet():
        Scenario(lambda: broken_system("StrictConsumer"), "consumer")(bytes([2, 0, 1, 0, 1, 0x00, 0x80]))


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_atheris_runs_a_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = fuzz(capsys, "ppc", "--engine", "atheris", "--runs", "200", "--seed", "1",
                       "--findings", str(tmp_path))
    assert status == 0 and executions(out) == 200, out


# ---- regressions: what fuzzing found ------------------------------------------------------------
def test_unknown_config_fields_of_mixed_types_are_a_config_error() -> None:
    """Found by the config target: ``typed`` sorted the unknown keys to name them, and keys of
    types that do not compare (msgpack keys may be ints, bytes, None…) raised TypeError."""
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['x', 1\]"):
        typed(TimerDriverConfig, {"irq": 1, "clients": [], "x": 2, 1: 3}, "PD 'timer'")


def test_check_reports_a_config_with_keys_of_mixed_types() -> None:
    """The same through ``check()``: an InvalidSystem, not a TypeError."""
    sdf = SystemDescription("mixed")
    sdf.add_pd(ProtectionDomain("timer", "sddf.drivers.timer.timerfd:TimerDriver",
                                config={"irq": 1, "clients": [], b"k": 0, None: 1}))
    with pytest.raises(InvalidSystem, match="unknown config field"):
        sdf.check()

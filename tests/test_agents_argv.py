"""argv building for every vendor x sandbox policy, resume, schema, long prompts, the command adapter."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.agents import ADAPTERS, build_command, new_parser
from bridge.agents.base import MAX_ARG, Invocation
from bridge.config import known_cli_names
from bridge.errors import BridgeError
from bridge.playbook import AgentProfile

POLICIES = ("read-only", "workspace-write", "full-access")
EXPECTED = {
    ("codex", "read-only"): ["--sandbox", "read-only"],
    ("codex", "workspace-write"): ["--sandbox", "workspace-write"],
    ("codex", "full-access"): ["--dangerously-bypass-approvals-and-sandbox"],
    ("claude", "read-only"): ["--permission-mode", "default"],
    ("claude", "workspace-write"): ["--permission-mode", "acceptEdits"],
    ("claude", "full-access"): ["--permission-mode", "bypassPermissions"],
    ("gemini", "read-only"): ["--approval-mode", "auto_edit", "--policy"],
    ("gemini", "workspace-write"): ["--approval-mode", "auto_edit"],
    ("gemini", "full-access"): ["--approval-mode", "yolo"],
}
DIR_FLAG = {"codex": "--add-dir", "claude": "--add-dir", "gemini": "--include-directories"}


@pytest.fixture
def inv(tmp_path: Path) -> Invocation:
    (tmp_path / "repo").mkdir()
    return Invocation(prompt="Audit the code.", cwd=tmp_path / "repo", shared_dir=tmp_path / "run" / "shared",
                      stage_dir=tmp_path / "run" / "stages" / "a" / "attempt-1")


def contains(argv: tuple[str, ...], seq: list[str]) -> bool:
    return any(list(argv[i:i + len(seq)]) == seq for i in range(len(argv)))


def folders_after(argv: tuple[str, ...], flag: str) -> list[str]:
    out = []
    for i, a in enumerate(argv):
        if a == flag:
            j = i + 1
            while j < len(argv) and not argv[j].startswith("-") and argv[j].startswith("/"):
                out.append(argv[j])
                j += 1
    return out


@pytest.mark.parametrize("cli", ["codex", "claude", "gemini"])
@pytest.mark.parametrize("policy", POLICIES)
def test_policy_flags_and_shared_folder(cli, policy, inv):
    cmd = build_command(AgentProfile(cli=cli, sandbox=policy), inv)
    assert isinstance(cmd.argv, tuple) and all(isinstance(a, str) for a in cmd.argv)
    assert cmd.argv[0] == cli and "-c" not in cmd.argv[:2] and "sh" not in cmd.argv[0]
    assert contains(cmd.argv, EXPECTED[(cli, policy)])
    assert str(inv.shared_dir) in folders_after(cmd.argv, DIR_FLAG[cli])
    assert cmd.argv.count("Audit the code.") == 1


def test_claude_read_only_allows_edits_only_in_shared(inv):
    cmd = build_command(AgentProfile(cli="claude"), inv)
    assert f"Edit(/{inv.shared_dir}/**)" in cmd.argv and f"Write(/{inv.shared_dir}/**)" in cmd.argv
    assert cmd.argv[1:3] == ("-p", "Audit the code.")  # before any variadic flag


def test_gemini_read_only_policy_file_denies_edits_outside_shared(inv):
    cmd = build_command(AgentProfile(cli="gemini"), inv)
    policy = inv.stage_dir / "gemini-policy.toml"
    assert contains(cmd.argv, ["--policy", str(policy)])
    assert 'decision = "deny"' in cmd.files[policy] and str(inv.shared_dir) in cmd.files[policy]
    assert "--policy" not in build_command(AgentProfile(cli="gemini", sandbox="workspace-write"), inv).argv


def test_gemini_max_turns_only_in_a_home_bridge_writes(inv, tmp_path):
    profile = AgentProfile(cli="gemini", max_turns=3)
    plain = build_command(profile, inv)
    assert "--max-turns" not in plain.argv and not any(".gemini" in str(p) for p in plain.files)
    home = tmp_path / "home"
    settings = home / ".gemini" / "settings.json"
    wire = FakeWiring(model="", env={"HOME": str(home)}, argv=(),
                      files={settings: '{"general": {"maxAttempts": 1}}'})
    cmd = build_command(profile, inv, wire)
    assert json.loads(cmd.files[settings]) == {"general": {"maxAttempts": 1}, "model": {"maxSessionTurns": 3}}
    assert json.loads(build_command(AgentProfile(cli="gemini"), inv, wire).files[settings]) == {
        "general": {"maxAttempts": 1}}


def test_codex_has_no_max_turns_flag(inv):
    cmd = build_command(AgentProfile(cli="codex", max_turns=3), inv)
    assert not any(a.startswith("--max") for a in cmd.argv) and not cmd.env and not cmd.files


def test_claude_full_access_sets_is_sandbox(inv):
    assert build_command(AgentProfile(cli="claude", sandbox="full-access"), inv).env["IS_SANDBOX"] == "1"
    assert "IS_SANDBOX" not in build_command(AgentProfile(cli="claude"), inv).env


def test_codex_shape(inv, tmp_path):
    cmd = build_command(AgentProfile(cli="codex", model="gpt-5.5"), inv)
    assert cmd.argv[:3] == ("codex", "exec", "--json")
    assert "--skip-git-repo-check" in cmd.argv  # cwd is not a git repo
    assert contains(cmd.argv, ["-C", str(inv.cwd)])
    assert contains(cmd.argv, ["-o", str(inv.stage_dir / "last_message.txt")])
    assert contains(cmd.argv, ["--model", "gpt-5.5"]) and cmd.argv[-1] == "Audit the code."
    (inv.cwd / ".git").mkdir()  # a stray folder is not a repository
    assert "--skip-git-repo-check" in build_command(AgentProfile(cli="codex"), inv).argv
    (inv.cwd / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert "--skip-git-repo-check" not in build_command(AgentProfile(cli="codex"), inv).argv


def test_codex_output_schema_written_into_stage_dir(inv):
    schema = {"type": "object", "required": ["status"]}
    cmd = build_command(AgentProfile(cli="codex"), Invocation(**{**inv.__dict__, "output_schema": schema}))
    path = inv.stage_dir / "output-schema.json"
    assert contains(cmd.argv, ["--output-schema", str(path)])
    assert json.loads(cmd.files[path]) == schema


def test_claude_schema_model_turns_tools_system_prompt(inv):
    profile = AgentProfile(cli="claude", model="claude-sonnet-4-5", max_turns=4, allowed_tools=["Read", "Bash(git *)"],
                           disallowed_tools=["WebFetch"], system_prompt="Be terse.")
    schema = {"type": "object"}
    cmd = build_command(profile, Invocation(**{**inv.__dict__, "output_schema": schema}))
    for seq in (["--model", "claude-sonnet-4-5"], ["--max-turns", "4"], ["--allowedTools", "Read", "Bash(git *)"],
                ["--disallowedTools", "WebFetch"], ["--append-system-prompt", "Be terse."],
                ["--json-schema", json.dumps(schema)], ["--output-format", "stream-json", "--verbose"]):
        assert contains(cmd.argv, seq), seq


def test_gemini_has_no_system_prompt_flag_so_it_leads_the_prompt(inv):
    cmd = build_command(AgentProfile(cli="gemini", system_prompt="Be terse."), inv)
    assert cmd.argv[1:3] == ("-p", "Be terse.\n\nAudit the code.")
    assert contains(cmd.argv, ["--output-format", "stream-json", "--skip-trust"])


@pytest.mark.parametrize("cli,expected", [("claude", ["--resume", "S1"]), ("gemini", ["--resume", "S1"])])
def test_resume(cli, expected, inv):
    cmd = build_command(AgentProfile(cli=cli), Invocation(**{**inv.__dict__, "resume_session": "S1"}))
    assert contains(cmd.argv, expected)


def test_codex_resume_uses_config_overrides(inv):
    cmd = build_command(AgentProfile(cli="codex", sandbox="workspace-write"),
                        Invocation(**{**inv.__dict__, "resume_session": "T1"}))
    assert cmd.argv[:4] == ("codex", "exec", "resume", "--json")
    assert cmd.argv[-2:] == ("T1", "Audit the code.")
    assert 'sandbox_mode="workspace-write"' in cmd.argv
    assert f'sandbox_workspace_write.writable_roots=["{inv.shared_dir}"]' in cmd.argv
    assert "--add-dir" not in cmd.argv and "-C" not in cmd.argv  # `exec resume` rejects them


def test_permission_mode_overrides_policy(inv):
    cmd = build_command(AgentProfile(cli="claude", permission_mode="plan"), inv)
    assert contains(cmd.argv, ["--permission-mode", "plan"]) and "default" not in cmd.argv
    cmd = build_command(AgentProfile(cli="gemini", permission_mode="plan"), inv)
    assert contains(cmd.argv, ["--approval-mode", "plan"])


def test_extra_dirs_and_profile_args_env(inv, tmp_path):
    extra = tmp_path / "docs"
    profile = AgentProfile(cli="codex", args=["--enable", "x"], env={"HTTPS_PROXY": "http://127.0.0.1:1"})
    cmd = build_command(profile, Invocation(**{**inv.__dict__, "extra_dirs": (extra,)}))
    assert contains(cmd.argv, ["--add-dir", str(extra)]) and contains(cmd.argv, ["--enable", "x"])
    assert cmd.env["HTTPS_PROXY"] == "http://127.0.0.1:1"


@pytest.mark.parametrize("cli,expected", [("codex", "-"), ("claude", None), ("gemini", "Follow the instructions above.")])
def test_long_prompt_goes_through_a_stdin_file(cli, expected, inv):
    prompt = "x" * (MAX_ARG + 10)
    cmd = build_command(AgentProfile(cli=cli), Invocation(**{**inv.__dict__, "prompt": prompt}))
    assert cmd.stdin is not None and cmd.files[cmd.stdin] == prompt
    assert prompt not in cmd.argv
    if expected:
        assert expected in cmd.argv


def test_long_prompt_without_stage_dir_is_a_clear_error(inv):
    with pytest.raises(BridgeError, match="too long"):
        build_command(AgentProfile(cli="codex"),
                      Invocation(prompt="x" * (MAX_ARG + 1), cwd=inv.cwd, shared_dir=inv.shared_dir))


@dataclass(frozen=True)
class FakeWiring:
    model: str = "gpt-5.5"
    env: dict = field(default_factory=lambda: {"CODEX_HOME": "/tmp/h"})
    argv: tuple = ("-c", "model_provider=fake")
    files: dict = field(default_factory=lambda: {Path("/tmp/h/config.toml"): "x=1"})


def test_wiring_is_merged(inv):
    cmd = build_command(AgentProfile(cli="codex", model="o3"), inv, FakeWiring())
    assert cmd.argv[2:4] == ("-c", "model_provider=fake")  # right after the subcommand
    assert contains(cmd.argv, ["--model", "gpt-5.5"])  # the rehearsal's model wins
    assert cmd.env["CODEX_HOME"] == "/tmp/h" and Path("/tmp/h/config.toml") in cmd.files


def test_command_adapter_templates(inv):
    profile = AgentProfile(cli="command", model="m1",
                           command=["mytool", "--in", "{{ prompt_file }}", "--out", "{{ shared }}/x", "{{ model }}", "{{ prompt }}"])
    cmd = build_command(profile, inv)
    pfile = inv.stage_dir / "prompt.txt"
    assert cmd.argv == ("mytool", "--in", str(pfile), "--out", f"{inv.shared_dir}/x", "m1", "Audit the code.")
    assert cmd.files[pfile] == "Audit the code."


def test_configured_command_cli_gets_model_and_dirs(inv):
    cmd = build_command(AgentProfile(cli="aider", model="gpt-4o"), inv)
    assert cmd.argv[0] == "aider" and contains(cmd.argv, ["--message-file", str(inv.stage_dir / "prompt.txt")])
    assert contains(cmd.argv, ["--model", "gpt-4o"]) and contains(cmd.argv, ["--read", str(inv.shared_dir)])


def test_command_adapter_long_prompt_in_argv_fails_clearly(inv):
    profile = AgentProfile(cli="command", command=["t", "{{ prompt }}"])
    with pytest.raises(BridgeError, match="prompt_file"):
        build_command(profile, Invocation(**{**inv.__dict__, "prompt": "y" * (MAX_ARG + 1)}))


def test_registry_and_config_names():
    assert set(ADAPTERS) == {"codex", "claude", "gemini", "command"}
    for module in ADAPTERS.values():
        assert callable(module.build_command) and callable(module.new_parser)
    assert {"codex", "claude", "gemini", "command", "aider", "script"} <= set(known_cli_names())


def test_project_override_adds_a_cli(tmp_path, inv):
    (tmp_path / ".bridge").mkdir()
    (tmp_path / ".bridge" / "clis.yaml").write_text(
        "mycli:\n  adapter: command\n  binary: mycli\n  command: [mycli, '{{ prompt }}']\n  output: text\n")
    cmd = build_command(AgentProfile(cli="mycli"), inv, project=tmp_path)
    assert cmd.argv == ("mycli", "Audit the code.")
    assert type(new_parser(AgentProfile(cli="mycli"), project=tmp_path)).__name__ == "TextParser"


def test_claude_interactive_is_the_tui_with_the_prompt_first(inv):
    profile = AgentProfile(cli="claude", sandbox="workspace-write", interactive=True)
    cmd = build_command(profile, replace_schema(inv))
    assert cmd.interactive and cmd.argv[:2] == ("claude", "Audit the code.")
    assert "-p" not in cmd.argv and "--output-format" not in cmd.argv and "--json-schema" not in cmd.argv
    assert contains(cmd.argv, ["--permission-mode", "acceptEdits"]) and cmd.stdin is None
    # a session id of bridge's choosing, so it can read the session's record (session_record.py)
    sid, again = (c.argv[c.argv.index("--session-id") + 1] for c in (cmd, build_command(profile, inv)))
    assert str(uuid.UUID(sid)) == sid and again != sid  # one per attempt
    resumed = build_command(profile, dataclasses.replace(inv, resume_session="abc"))
    assert contains(resumed.argv, ["--resume", "abc"]) and "--session-id" not in resumed.argv
    with pytest.raises(BridgeError, match="too long for an interactive"):
        build_command(profile, Invocation(prompt="x" * (MAX_ARG + 1), cwd=inv.cwd, shared_dir=inv.shared_dir,
                                          stage_dir=inv.stage_dir))


def replace_schema(inv: Invocation) -> Invocation:
    return Invocation(prompt=inv.prompt, cwd=inv.cwd, shared_dir=inv.shared_dir, stage_dir=inv.stage_dir,
                      output_schema={"type": "object"})


def test_gemini_interactive_is_the_tui_trusting_its_cwd(inv):
    cmd = build_command(AgentProfile(cli="gemini", sandbox="workspace-write", interactive=True), inv)
    assert cmd.interactive and cmd.argv[:3] == ("gemini", "-i", "Audit the code.")
    assert "-p" not in cmd.argv and "--output-format" not in cmd.argv and "--skip-trust" in cmd.argv

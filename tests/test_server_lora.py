"""Named LoRA adapters through the server: the ``model`` field chooses base or adapter, ``/v1/models`` lists the
adapters with their parent, and vLLM's live load/unload routes (behind the API key, off unless enabled)."""

from __future__ import annotations

import pytest
from test_server_support import ThreadServer, assert_error, httpx

pytest.importorskip("torch")
pytest.importorskip("peft")

from lmchat import ChatModel  # noqa: E402
from lmchat.errors import ConfigError  # noqa: E402
from lmchat.server import ServerSettings  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name a colour."}]
KEY = "sk-lora-test"


def model_config(tiny_model_dir, tiny_lora_dirs):
    return {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 6,
            "native_decode": "off", "lora_modules": {"alpha": str(tiny_lora_dirs["alpha"])}}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tiny_lora_dirs):
    with ThreadServer(model_config(tiny_model_dir, tiny_lora_dirs), served_model_names=("tiny",), api_keys=(KEY,),
                      enable_lora_loading=True) as live:
        yield live


def answer(client, model):
    return client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=6).choices[0].message.content


def test_the_model_field_chooses_base_or_adapter(server):
    client = server.openai()
    direct = server.chat_model
    assert answer(client, "alpha") == direct.chat(MESSAGES, adapter="alpha", max_new_tokens=6)[0].response_text
    assert answer(client, "tiny") == direct.chat(MESSAGES, max_new_tokens=6)[0].response_text
    assert answer(client, "alpha") != answer(client, "tiny")
    completion = client.completions.create(model="alpha", prompt="Once upon a time", max_tokens=5)
    prepared = direct.prepare_completion("Once upon a time", adapter="alpha", max_new_tokens=5)
    expected = direct.run_sync(direct.agenerate(prepared))[0].response_text
    assert completion.choices[0].text == expected
    with server.http() as http:  # llama.cpp's native route takes the model field too
        native = http.post("/completion", json={"model": "alpha", "prompt": "Once upon a time", "n_predict": 5})
    assert native.status_code == 200 and native.json()["content"] == expected


def test_models_lists_adapters_with_their_parent(server, tiny_lora_dirs):
    cards = {card.id: card for card in server.openai().models.list().data}
    assert set(cards) == {"tiny", "alpha"}
    assert cards["alpha"].parent == "tiny" and cards["alpha"].root == str(tiny_lora_dirs["alpha"])
    assert getattr(cards["tiny"], "parent", None) is None
    with server.http() as http:
        assert http.get("/v1/models/alpha").json()["parent"] == "tiny"
        error = assert_error(http.post("/v1/chat/completions", json={"model": "beta", "messages": MESSAGES}), 404,
                             param="model")
        assert "it serves: tiny, alpha" in error["message"]


def test_live_load_and_unload(server, tiny_lora_dirs):
    client = server.openai()
    with server.http() as http:
        response = http.post("/v1/load_lora_adapter", json={"lora_name": "beta", "lora_path": str(tiny_lora_dirs["beta"])})
        assert response.status_code == 200 and "beta" in response.text
        assert "beta" in {card.id for card in client.models.list().data}
        assert answer(client, "beta") == server.chat_model.chat(MESSAGES, adapter="beta", max_new_tokens=6)[0].response_text
        response = http.post("/v1/unload_lora_adapter", json={"lora_name": "beta"})
        assert response.status_code == 200, response.text
        assert "beta" not in {card.id for card in client.models.list().data}
        assert_error(http.post("/v1/chat/completions", json={"model": "beta", "messages": MESSAGES}), 404,
                     param="model")
        assert_error(http.post("/v1/unload_lora_adapter", json={"lora_name": "beta"}), 404, param="lora_name")


def test_a_bad_adapter_is_a_400_and_changes_nothing(server, tmp_path):
    with server.http() as http:
        error = assert_error(http.post("/v1/load_lora_adapter", json={"lora_name": "bad", "lora_path": str(tmp_path)}),
                             400, param="lora_path")
        assert "no adapter_config.json" in error["message"]
        assert_error(http.post("/v1/load_lora_adapter", json={"lora_name": "alpha", "lora_path": str(tmp_path)}),
                     400, param="lora_name")  # already loaded
        assert_error(http.post("/v1/load_lora_adapter", json={"lora_name": "tiny", "lora_path": str(tmp_path)}),
                     400, param="lora_name")  # the base model's name
        assert_error(http.post("/v1/load_lora_adapter", json={"lora_name": "x"}), 400, param="lora_path")
    assert {card.id for card in server.openai().models.list().data} == {"tiny", "alpha"}


def test_the_routes_need_the_api_key(server, tiny_lora_dirs):
    body = {"lora_name": "beta", "lora_path": str(tiny_lora_dirs["beta"])}
    assert httpx.post(f"{server.base_url}/v1/load_lora_adapter", json=body).status_code == 401
    assert httpx.post(f"{server.base_url}/v1/unload_lora_adapter", json={"lora_name": "alpha"}).status_code == 401
    assert [a.name for a in server.chat_model.adapters] == ["alpha"]


def test_the_routes_are_off_unless_enabled(tiny_model_dir, tiny_lora_dirs):
    with ThreadServer(model_config(tiny_model_dir, tiny_lora_dirs)) as live, live.http() as http:
        assert http.post("/v1/load_lora_adapter", json={"lora_name": "b", "lora_path": "x"}).status_code == 404
        assert "alpha" in {card["id"] for card in http.get("/v1/models").json()["data"]}  # served all the same


def test_enabling_the_routes_needs_an_api_key():
    with pytest.raises(ConfigError, match="needs an API key"):
        ServerSettings(enable_lora_loading=True)


def test_an_engine_without_named_adapters_refuses_them_at_start(fake_script, tmp_path):
    with pytest.raises(ConfigError, match="does not serve named LoRA adapters") as error:
        ChatModel({"infer_backend": "fake", "model_name_or_path": fake_script(), "lora_modules": f"a={tmp_path}"})
    assert error.value.param == "lora_modules"

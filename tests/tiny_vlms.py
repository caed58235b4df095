"""Tiny random-weight vision-language and audio models, built here from configs with their real processor classes.

No Hub download: each family gets SmolLM2's real tokenizer with the family's special tokens added, the family's
chat template (written from its model card's template), its PIL/NumPy image processor (or Whisper feature
extractor), and a model config with tiny text and vision/audio sizes. Everything is saved the way a Hub checkpoint
is laid out (``config.json``, ``model.safetensors``, tokenizer files, ``preprocessor_config.json``,
``processor_config.json``, ``video_preprocessor_config.json``, ``chat_template.jinja``), so lmchat loads it as a
user's model. Models are a few million parameters: a forward pass takes milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# llava-hf's llava-1.5 template: "USER: <image>\n... ASSISTANT:"
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}"
    "{% endif %}{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for item in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for item in message['content'] | selectattr('type', 'equalto', 'text') %}{{ item['text'] + ' ' }}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# HuggingFaceM4/Idefics3-8B-Llama3's template
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# google/gemma-3-4b-it's template (system folded into the first user turn)
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + "
    "'\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first_user_prefix = '' %}"
    "{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Qwen/Qwen2-Audio-7B-Instruct's template
QWEN2_AUDIO_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content or content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: "
    "<|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 2048}


def _tokenizer(tokenizer_dir: Path, tokens: list[str], extra: dict[str, str] | None = None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, extra_special_tokens=extra or {})
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    return tokenizer


def _ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(token) for token in tokens]


def _seeded(model_class: Any, config: Any, seed: int) -> Any:
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_class(config).eval()


def _randomize(parameter: Any, seed: int, scale: float = 0.5) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def _save(out: Path, model: Any, tokenizer: Any, template: str, processor_config: dict[str, Any],
          image_processor: Any = None, feature_extractor: Any = None, video: dict[str, Any] | None = None) -> Path:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for part in (image_processor, feature_extractor):
        if part is not None:
            part.save_pretrained(out)
    if video is not None:
        (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2), encoding="utf-8")
    (out / "processor_config.json").write_text(json.dumps(processor_config, indent=2), encoding="utf-8")
    (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    return out


def qwen2_vl(out: Path, tokenizer_dir: Path, version: str = "2", seed: int = 0, head_dim: int = 16) -> Path:
    """Qwen2-VL (``version="2"``) or Qwen2.5-VL (``"2.5"``): M-RoPE, image and video, NumPy processors.

    ``head_dim`` 32 (two heads, one KV head) is what vLLM's CPU attention takes (it has no 16-wide kernel)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig
    from transformers import Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = _tokenizer(tokenizer_dir, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    start, end, image, video = _ids(tokenizer, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    heads = {} if head_dim == 16 else {"num_attention_heads": 64 // head_dim, "num_key_value_heads": 1}
    section = [head_dim // 8, head_dim * 3 // 16, head_dim // 2 - head_dim // 8 - head_dim * 3 // 16]  # [2, 3, 3]
    text = {**TEXT, **heads, "vocab_size": len(tokenizer), "rope_scaling": {"type": "mrope", "mrope_section": section},
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "initializer_range": 0.2}
    vision = {"depth": 2, "hidden_size": 64, "num_heads": 2, "patch_size": 14, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "in_channels": 3, "initializer_range": 0.2}
    if version == "2":
        config_class, model_class, processor = Qwen2VLConfig, Qwen2VLForConditionalGeneration, "Qwen2VLProcessor"
        vision.update(embed_dim=32, mlp_ratio=2)
    else:
        config_class, model_class = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        processor = "Qwen2_5_VLProcessor"
        vision.update(intermediate_size=64, out_hidden_size=64, window_size=56, fullatt_block_indexes=[1])
    config = config_class(text_config=text, vision_config=vision, image_token_id=image, video_token_id=video,
                          vision_start_token_id=start, vision_end_token_id=end, initializer_range=0.2)
    sizes = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}
    image_processor = Qwen2VLImageProcessorPil(**sizes, patch_size=14, merge_size=2, temporal_patch_size=2)
    video_config = {"video_processor_type": f"{processor.removesuffix('Processor')}VideoProcessor",
                    "size": {"shortest_edge": 28 * 28 * 2, "longest_edge": 28 * 28 * 8}, "patch_size": 14,
                    "temporal_patch_size": 2, "merge_size": 2}
    return _save(out, _seeded(model_class, config, seed), tokenizer, QWEN2_VL_TEMPLATE,
                 {"processor_class": processor}, image_processor, video=video_config)


def llava(out: Path, tokenizer_dir: Path, seed: int = 0, head_dim: int = 16) -> Path:
    """LLaVA-1.5: a CLIP vision tower, a projector, a Llama text model; ``<image>`` expands to 16 tokens
    (``head_dim`` 32 for vLLM's CPU attention)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = _tokenizer(tokenizer_dir, ["<image>"])
    [image] = _ids(tokenizer, "<image>")
    text = LlamaConfig(**TEXT, head_dim=head_dim, vocab_size=len(tokenizer), initializer_range=0.2,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image, image_seq_length=16,
                         vision_feature_select_strategy="default", vision_feature_layer=-1, initializer_range=0.2)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor_config = {"processor_class": "LlavaProcessor", "patch_size": 8,
                        "vision_feature_select_strategy": "default", "image_token": "<image>",
                        "num_additional_image_tokens": 1}  # CLIP's CLS token, dropped by "default"
    return _save(out, _seeded(LlavaForConditionalGeneration, config, seed), tokenizer, LLAVA_TEMPLATE,
                 processor_config, image_processor)


def idefics3(out: Path, tokenizer_dir: Path, seed: int = 0, head_dim: int = 16) -> Path:
    """Idefics3: a SigLIP tower with pixel shuffle; images split into tiles (row/col tokens) plus a global one
    (``head_dim`` 32 for vLLM's CPU attention)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    grid = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer = _tokenizer(tokenizer_dir, ["<fake_token_around_image>", "<image>", "<end_of_utterance>",
                                           "<global-img>", "<|begin_of_text|>", *grid])
    [image] = _ids(tokenizer, "<image>")
    text = {**TEXT, "head_dim": head_dim, "model_type": "llama", "vocab_size": len(tokenizer), "initializer_range": 0.2,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8, "initializer_range": 0.2}
    config = Idefics3Config(text_config=text, vision_config=vision, image_token_id=image, scale_factor=2)
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                                do_image_splitting=True)
    return _save(out, _seeded(Idefics3ForConditionalGeneration, config, seed), tokenizer, IDEFICS3_TEMPLATE,
                 {"processor_class": "Idefics3Processor", "image_seq_len": 4}, image_processor)


def gemma3(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Gemma 3: SigLIP tower, pooled to 4 soft tokens; image tokens attend both ways; sliding-window layers."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    extra = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tokenizer = _tokenizer(tokenizer_dir, ["<start_of_image>", "<end_of_image>", "<image_soft_token>",
                                           "<start_of_turn>", "<end_of_turn>"], extra)
    boi, eoi, image = _ids(tokenizer, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    text = {**TEXT, "vocab_size": len(tokenizer), "head_dim": 16, "sliding_window": 8, "initializer_range": 0.02,
            "layer_types": ["sliding_attention", "full_attention"], "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8, "vision_use_head": False}
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=boi,
                          eoi_token_index=eoi, image_token_index=image, initializer_range=0.02)
    image_processor = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    model = _seeded(Gemma3ForConditionalGeneration, config, seed)
    _randomize(model.model.multi_modal_projector.mm_input_projection_weight, seed)  # Gemma 3 starts it at zero
    return _save(out, model, tokenizer, GEMMA3_TEMPLATE,
                 {"processor_class": "Gemma3Processor", "image_seq_length": 4}, image_processor)


def qwen2_audio(out: Path, tokenizer_dir: Path, seed: int = 0, head_dim: int = 16, hub_layout: bool = False) -> Path:
    """Qwen2-Audio: a Whisper encoder (log-mel features), pooled 2x, before a Qwen2 text model (``head_dim`` 32:
    two heads, one KV head, for vLLM's CPU attention). ``hub_layout``: weights named as the Hub checkpoint names
    them (``language_model.model.layers...``), which vLLM 0.32 reads; transformers 5 saves
    ``language_model.model.model...``, which it does not."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

    tokenizer = _tokenizer(tokenizer_dir, ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"])
    [audio] = _ids(tokenizer, "<|AUDIO|>")
    heads = {} if head_dim == 16 else {"num_attention_heads": 64 // head_dim, "num_key_value_heads": 1}
    text = {**TEXT, **heads, "model_type": "qwen2", "vocab_size": len(tokenizer), "initializer_range": 0.2,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    encoder = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
               "num_mel_bins": 16, "max_source_positions": 1500, "initializer_range": 0.2}
    config = Qwen2AudioConfig(audio_config=encoder, text_config=text, audio_token_index=audio)
    features = WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=30,
                                       n_fft=400)
    processor_config = {"processor_class": "Qwen2AudioProcessor", "audio_token": "<|AUDIO|>",
                        "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
    _save(out, _seeded(Qwen2AudioForConditionalGeneration, config, seed), tokenizer, QWEN2_AUDIO_TEMPLATE,
          processor_config, feature_extractor=features)
    if hub_layout:
        from safetensors.torch import load_file, save_file

        weights = out / "model.safetensors"
        tensors = {name.replace("language_model.model.model.", "language_model.model."): tensor
                   for name, tensor in load_file(weights).items()}
        save_file(tensors, weights, metadata={"format": "pt"})
    return out


FAMILIES = {"qwen2_vl": qwen2_vl, "qwen2_5_vl": lambda out, tok: qwen2_vl(out, tok, "2.5"), "llava": llava,
            "idefics3": idefics3, "gemma3": gemma3, "qwen2_audio": qwen2_audio}

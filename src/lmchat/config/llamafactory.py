"""LLaMA-Factory's inference keys that cannot change an answer in lmchat: training, export, preprocessing.

LLaMA-Factory reads ``ModelArguments``, ``DataArguments``, ``FinetuningArguments`` and ``GeneratingArguments`` at
inference (``get_infer_args``), so an inference YAML may hold any of their keys. Every key lmchat can honour is a
field of :class:`~lmchat.config.model_config.ModelConfig`; the keys below cannot change an answer, so they are
accepted, kept (``ModelConfig.ignored``) and reported once in the log, never an error. The list is the union over
LLaMA-Factory 0.9.3 to 0.9.5 and its main branch (keys since renamed or removed included), grouped by why they do
not matter at inference.
"""

from __future__ import annotations

_GROUPS: dict[str, str] = {
    "only matter to training": """
        shift_attn mixture_of_depths use_unsloth use_unsloth_gc enable_liger_kernel moe_aux_loss_coef
        disable_gradient_checkpointing use_reentrant_gc upcast_layernorm upcast_lmhead_output train_from_scratch
        use_v1_kernels print_param_status fp8 fp8_backend fp8_enable_fsdp_float8_all_gather
        pure_bf16 use_llama_pro use_adam_mini use_mca use_megatron_bridge megatron_bridge_args use_hyper_parallel
        hyper_parallel_args hyper_parallel_cp_size use_muon use_dft_loss use_asft_loss asft_alpha use_eaft_loss
        eaft_alpha freeze_vision_tower freeze_multi_modal_projector freeze_language_model compute_accuracy
        disable_shuffling early_stopping_steps plot_loss include_effective_tokens_per_second
        freeze_trainable_layers freeze_trainable_modules freeze_extra_modules
        additional_target lora_alpha lora_dropout lora_rank lora_target loraplus_lr_ratio loraplus_lr_embedding
        use_rslora use_dora pissa_init pissa_iter pissa_convert create_new_adapter
        module_dropout oft_rank oft_block_size oft_target
        pref_beta pref_ftx pref_bco_weight pref_loss dpo_label_smoothing kto_chosen_weight kto_rejected_weight
        simpo_gamma ppo_buffer_size ppo_epochs ppo_score_norm ppo_target ppo_whiten_rewards ref_model
        ref_model_adapters ref_model_quantization_bit reward_model reward_model_adapters
        reward_model_quantization_bit reward_model_type ld_alpha
        use_galore galore_target galore_rank galore_update_interval galore_scale galore_proj_type galore_layerwise
        use_apollo apollo_target apollo_rank apollo_update_interval apollo_scale apollo_proj apollo_proj_type
        apollo_scale_type apollo_layerwise apollo_scale_front
        use_badam badam_mode badam_start_block badam_switch_mode badam_switch_interval badam_update_ratio
        badam_mask_mode badam_verbose
        use_swanlab swanlab_project swanlab_workspace swanlab_run_name swanlab_mode swanlab_api_key swanlab_logdir
        swanlab_lark_webhook_url swanlab_lark_secret
        kt_cpu_activation kt_weight_path kt_non_expert_weight_path kt_expert_checkpoint_path kt_use_lora_experts
        kt_lora_expert_num kt_lora_expert_intermediate_size adapter_folder
    """,
    "only matter to training data preprocessing": """
        eval_dataset train_on_prompt mask_history streaming buffer_size mix_strategy interleave_probs
        overwrite_cache preprocessing_batch_size preprocessing_num_workers eval_num_beams ignore_pad_token_for_loss
        val_size eval_on_each_dataset packing neat_packing tokenized_path data_shared_file_system
    """,
    "change the tokenizer while training, and lmchat loads the tokenizer saved with the model": """
        resize_vocab split_special_tokens add_tokens add_special_tokens new_special_tokens_config init_special_tokens
    """,
    "only matter to 'llamafactory-cli export'": """
        export_dir export_size export_device export_quantization_bit export_quantization_dataset
        export_quantization_nsamples export_quantization_maxlen export_legacy_format export_hub_model_id
    """,
    "log in to ModelScope or Modelers, and lmchat downloads from the Hugging Face Hub": "ms_hub_token om_hub_token",
    "are batch-inference keys, read by 'lmchat infer'": "dataset dataset_dir media_dir max_samples",
    "have no effect with transformers 5: its tokenizers are always fast, its loading always memory-efficient":
        "use_fast_tokenizer low_cpu_mem_usage",
    "are always on in lmchat's engines, with the same answers": "use_kv_cache use_cache",
    "matter only when weights are offloaded to disk, which lmchat's engines never do": "offload_folder",
}

IGNORED_KEYS: dict[str, str] = {name: reason for reason, names in _GROUPS.items() for name in names.split()}
"""Key -> why lmchat accepts it without using it."""

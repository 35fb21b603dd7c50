"""Export a trained run as a Hugging Face `transformers` LlamaForCausalLM directory.

    python -m simscale.export --run RUNDIR --out DIR

DIR gets config.json, model.safetensors (float32) and the run's tokenizer as a
PreTrainedTokenizerFast with simscale's special tokens, encoding as simscale's scorer does (`<s>`
first, a space before text that does not start with one), so `LlamaForCausalLM.from_pretrained(DIR)`
gives simscale's logits and lm-eval's `hf` model scores an export as `simscale.evaluate` does. The
parameters are the run's final checkpoint (refused when the newest readable one is older, unless
--allow_earlier_step). Needs the `hf` extra (transformers, safetensors) but not torch.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from simscale.data.tokenizer import BOS, EOS
from simscale.model import llama


def hf_config(model_cfg) -> dict:
    """LlamaConfig's fields for a simscale model config (the architecture is the same: RMSNorm before
    attention and MLP, rotary embeddings with rotate-half, SwiGLU, no biases)."""
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=model_cfg.vocab_size,
                hidden_size=model_cfg.hidden, intermediate_size=llama.intermediate(model_cfg),
                num_hidden_layers=model_cfg.layers, num_attention_heads=model_cfg.heads,
                num_key_value_heads=llama.kv_heads(model_cfg), head_dim=llama.head_dim(model_cfg),
                max_position_embeddings=model_cfg.max_len, rms_norm_eps=model_cfg.norm_eps,
                rope_theta=model_cfg.rope_theta, tie_word_embeddings=bool(model_cfg.tie_embeddings),
                hidden_act="silu", attention_bias=False, mlp_bias=False, torch_dtype="float32")


def hf_state_dict(params, model_cfg) -> dict[str, np.ndarray]:
    """simscale parameters -> LlamaForCausalLM's state dict, float32 (torch weights are [out, in])."""
    f32 = lambda x: np.array(x, np.float32, order="C")  # noqa: E731 - a C-ordered, writable copy
    D = model_cfg.hidden
    state = {"model.embed_tokens.weight": f32(params["embed"]),
             "model.norm.weight": f32(params["final_norm"])}
    if not model_cfg.tie_embeddings:
        state["lm_head.weight"] = f32(params["lm_head"].T)
    layers = params["layers"]
    for i in range(model_cfg.layers):
        pre = f"model.layers.{i}."
        state.update({
            pre + "input_layernorm.weight": f32(layers["attn_norm"][i]),
            pre + "post_attention_layernorm.weight": f32(layers["mlp_norm"][i]),
            pre + "self_attn.q_proj.weight": f32(layers["wq"][i].reshape(D, -1).T),
            pre + "self_attn.k_proj.weight": f32(layers["wk"][i].reshape(D, -1).T),
            pre + "self_attn.v_proj.weight": f32(layers["wv"][i].reshape(D, -1).T),
            pre + "self_attn.o_proj.weight": f32(layers["wo"][i].reshape(-1, D).T),
            pre + "mlp.gate_proj.weight": f32(layers["w_gate"][i].T),
            pre + "mlp.up_proj.weight": f32(layers["w_up"][i].T),
            pre + "mlp.down_proj.weight": f32(layers["w_down"][i].T),
        })
    return state


def scoring_tokenizer(tokenizer_path):
    """The run's tokenizer encoding text as simscale's scorer does (scoring.TextEncoder.encode_pair):
    `<s>` first, then the text with a space before it unless it starts with whitespace. So lm-eval
    and `tokenizer(text)` score an export on the same tokens as `simscale.evaluate`."""
    from tokenizers import pre_tokenizers, processors

    from simscale.data import tokenizer

    tok = tokenizer.load(tokenizer_path)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, bos)])
    return tok


def export(run_dir, out_dir, allow_earlier_step: bool = False) -> pathlib.Path:
    """Write run_dir's model and tokenizer to out_dir as a transformers directory; returns out_dir."""
    from safetensors.numpy import save_file
    from transformers import PreTrainedTokenizerFast

    from simscale.train.checkpoint import load_final_checkpoint

    run_dir, out_dir = pathlib.Path(run_dir), pathlib.Path(out_dir)
    tokenizer_path = run_dir / "tokenizer.json"
    if not tokenizer_path.exists():
        raise FileNotFoundError(f"{tokenizer_path} not found: only a run trained on text has a tokenizer to "
                                "export")
    params, cfg, step = load_final_checkpoint(run_dir, allow_earlier_step)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(hf_config(cfg.model), indent=1) + "\n")
    save_file(hf_state_dict(params, cfg.model), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    tok = PreTrainedTokenizerFast(tokenizer_object=scoring_tokenizer(tokenizer_path), bos_token=BOS,
                                  eos_token=EOS, unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]",
                                  model_max_length=cfg.model.max_len)
    tok.save_pretrained(str(out_dir))
    (out_dir / "simscale.json").write_text(json.dumps({"run": str(run_dir.absolute()), "step": step}) + "\n")
    return out_dir


def main(argv=None) -> int:
    from simscale import cli, cpu_runtime

    p = argparse.ArgumentParser(prog="python -m simscale.export", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished run directory (trained on text)")
    p.add_argument("--out", required=True, help="the transformers directory to write")
    p.add_argument("--allow_earlier_step", action="store_true",
                   help="export the newest readable checkpoint even when it is not the run's final step")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    cpu_runtime.configure()
    return cli.run(_export, args)


def _export(args) -> None:
    from simscale.validation import check_folder

    check_folder(args.run, "--run", created=False)
    check_folder(args.out, "--out")
    if not pathlib.Path(args.run).is_dir():
        raise FileNotFoundError(f"--run {args.run} does not exist")
    out = export(args.run, args.out, args.allow_earlier_step)
    print(f"wrote {out} (LlamaForCausalLM.from_pretrained / AutoTokenizer.from_pretrained)")


if __name__ == "__main__":
    sys.exit(main())

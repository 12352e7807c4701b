"""`calora-generate`: try a trained generative task in PyTorch, streaming tokens as they come.

    calora-generate --task movie_dialog --prompt "where were you last night?"
    calora-generate --task rotten_tomatoes_gen --prompt "$(cat review.txt)" --teacher   # the uncompressed teacher

It runs the compressed backbone with the task's CA-LoRA (the reference the exported artifacts are
compared with), formats the prompt exactly as training did (the recorded chat template or plain
format), and decodes greedily unless --sample is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_support import add_common_flags, run_cli
from .config import MAX_LENGTH
from .errors import ArtifactError, ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="calora-generate", description="Generate with a trained generative calora task "
                                "(compressed backbone + CA-LoRA, in PyTorch), streaming the tokens.")
    p.add_argument("--task", required=True, help="a generative task trained by calora-train")
    p.add_argument("--runs", default="calora_runs", help="where calora-train wrote it (default: %(default)s)")
    p.add_argument("--prompt", required=True, help="the user's text (formatted as in training)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7, help="with --sample (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=0.9, help="with --sample (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="with --sample (default: %(default)s)")
    p.add_argument("--teacher", action="store_true", help="use the uncompressed backbone + teacher LoRA instead")
    add_common_flags(p)
    return p


def _check(args) -> None:
    if not 1 <= args.max_new_tokens <= MAX_LENGTH:
        raise ConfigError(f"--max-new-tokens {args.max_new_tokens}: must be between 1 and {MAX_LENGTH}")
    if args.sample and not (0 < args.temperature <= 10):
        raise ConfigError(f"--temperature {args.temperature}: must be in (0, 10]")
    if args.sample and not (0 < args.top_p <= 1):
        raise ConfigError(f"--top-p {args.top_p}: must be in (0, 1]")
    if not args.prompt.strip():
        raise ConfigError("--prompt: empty")


def load_model(task_dir: Path, teacher: bool):
    """(model, calora_config) for the student (compressed + CA-LoRA) or the uncompressed teacher."""
    from .artifacts import load_student, read_json
    from .kinds import KindName, get_kind, kind_of

    cfg = read_json(task_dir / "calora_config.json")
    if kind_of(cfg) != KindName.GENERATE:
        raise ConfigError(f"--task {cfg['task']['name']!r} is a {kind_of(cfg).value} task; calora-generate runs "
                          "generative tasks")
    if not teacher:
        return load_student(task_dir)
    from .backbones import load_tokenizer
    from .peft_io import attach_lora, read_lora_dir

    source = cfg["backbone"]["source"]
    model = get_kind(KindName.GENERATE).load_model(source, cfg["task"], 0, load_tokenizer(source))
    adapter = read_lora_dir(task_dir.parent / "teacher")
    attach_lora(model, adapter.config, adapter.tensors)
    return model.eval(), cfg


def main(argv: list[str] | None = None) -> int:
    """`calora-generate`; returns the exit code (0, 2 bad input, 3 internal error, 130/143 interrupted)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        _check(args)
        task_dir = Path(args.runs) / args.task / "calora"
        if not (task_dir / "calora_config.json").is_file():
            raise ArtifactError(f"--task {args.task!r}: no trained task at {task_dir}")
        import torch
        from transformers import TextStreamer

        from .backbones import load_tokenizer
        from .gen_data import PromptFormat, eos_id, prompt_ids

        model, cfg = load_model(task_dir, args.teacher)
        tok = load_tokenizer(cfg["backbone"]["source"])
        ids = prompt_ids(tok, PromptFormat.of(tok), args.prompt, int(cfg["task"]["max_length"]))
        torch.manual_seed(args.seed)
        streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        sampling = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p} if args.sample else \
            {"do_sample": False}
        with torch.no_grad():
            model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           max_new_tokens=args.max_new_tokens, eos_token_id=eos_id(tok),
                           pad_token_id=tok.pad_token_id, streamer=streamer, **sampling)
        sys.stdout.flush()
        return 0

    return run_cli("calora-generate", args, body)


if __name__ == "__main__":
    sys.exit(main())

"""Tiny random GPT-2 and Llama models with a locally trained tokenizer, for fast tests (does I/O).

No hub: a byte-level BPE tokenizer is trained on a few sentences and wrapped as a
``PreTrainedTokenizerFast`` with a simple chat template; the model is a 2-layer config with
random weights (a large initialiser range, so greedy choices are far from ties).
"""

# Heavy libraries (onnxruntime, optimum, transformers, torch, tqdm) are imported inside the
# functions that need them, so `import llmnode` stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

from pathlib import Path

from llmnode.agents.models.store import Manifest, ModelStore

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A mesh of nodes serves language models to agents.",
    "Every message is signed and encrypted before it leaves a node.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "Tokens stream back to the caller one by one, as soon as they are ready.",
    "Numbers like 1, 2, 3, 42 and 1000 appear in text too.",
    "héllo wörld, naïve café, 東京, emoji 🙂 and other multi-byte characters.",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_tokenizer(vocab_size: int = 384) -> object:
    """A byte-level BPE ``PreTrainedTokenizerFast`` with a chat template; ids 0-2 are special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_causal_lm(
    directory: str | Path, arch: str = "gpt2", seed: int = 0, max_positions: int = 1024
) -> Path:
    """Save a tiny random causal LM (``gpt2`` or ``llama``) and its tokenizer in ``directory``."""
    import torch
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    vocab_size = len(tokenizer)  # type: ignore[arg-type]
    common = {"vocab_size": vocab_size, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    config: transformers.PretrainedConfig
    if arch == "gpt2":
        config = transformers.GPT2Config(  # type: ignore[no-untyped-call]
            n_layer=2,
            n_embd=64,
            n_head=4,
            n_positions=max_positions,
            initializer_range=0.2,
            **common,
        )
        model_class: type = transformers.GPT2LMHeadModel
    elif arch == "llama":
        config = transformers.LlamaConfig(  # type: ignore[no-untyped-call]
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max_positions,
            initializer_range=0.2,
            **common,
        )
        model_class = transformers.LlamaForCausalLM
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}: use gpt2 or llama")
    torch.manual_seed(seed)
    model = model_class(config)
    model.eval()
    model.generation_config.eos_token_id = 0
    model.generation_config.pad_token_id = 0
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


def export_tiny(
    store: ModelStore,
    name: str = "tiny-gpt2",
    *,
    arch: str | None = None,
    seed: int = 0,
    quantize: str | None = None,
) -> Manifest:
    """Build a tiny random model and export it into ``store`` (a few seconds); returns it.

    ``arch`` defaults from the name ("llama" if it contains "llama", else "gpt2"). An existing
    entry of that name is kept.
    """
    import tempfile

    from llmnode.agents.models.export import export

    if store.exists(name):
        return store.get(name)
    chosen = arch or ("llama" if "llama" in name else "gpt2")
    with tempfile.TemporaryDirectory(prefix="llmnode-tiny-") as scratch:
        source = build_tiny_causal_lm(Path(scratch) / name, arch=chosen, seed=seed)
        return export(
            str(source),
            store,
            task="text-generation",
            name=name,
            quantize=quantize,
            progress=False,
            source_label=f"tiny:{chosen}:seed={seed}",
        )

"""The task-agnostic compression spec: what is done to the backbone before adapters are trained.

A spec is a frozen, validated, serialisable value. It has a short text form for the command line,
e.g. ``int4:g32+sparse:0.5+emb:int8``, and a JSON form that is stored beside every trained adapter
so that later stages rebuild exactly the same compressed backbone.

Tokens of the text form (joined with ``+``; ``none`` means no compression):

=================  ===========================================================================
``int4[:gN]``      int4 weights, symmetric, per group of N input channels (default 32), and
                   int8 per-token dynamic activations: torchao's 8da4w, what XNNPACK runs.
``int8``           int8 weights per output channel + int8 dynamic activations (8da8w).
``nf4``            bitsandbytes NF4 weights (QLoRA-style memory saver on a GPU host).
``bnb-int8``       bitsandbytes LLM.int8 weights.
``deploy:int4[:gN]`` / ``deploy:int8``  for bnb formats: what a mobile target re-quantizes to.
``sparse:F``       unstructured magnitude pruning of fraction F of each linear's weights.
``sparse:2:4``     semi-structured 2:4 magnitude pruning (2 of every 4 input weights kept).
``heads:F``        structured: remove fraction F of attention heads per layer (BERT family).
``ffn:F``          structured: remove fraction F of FFN channels per layer.
``emb:int8``       int8 per-row weight quantization of the token embedding table.
``emb:int4``       int4 symmetric per group of 32 hidden values of the token embedding table
                   (half the bytes of int8: the lever past 6x for a small encoder, whose table
                   is half of its weights).
``noact``          keep activations in float (weight quantization only).
``act:tensor``     with ``int8``: simulate int8 activations quantized per tensor (one scale and
                   zero point per example), what ONNX Runtime's ``quantize_dynamic`` graphs run
                   (DynamicQuantizeLinear + integer MatMul: its fast int8 kernels). The default,
                   ``act:token``, is one scale per token (XNNPACK's scheme, ExecuTorch). Train for
                   the runtime you ship: ExecuTorch and Core ML refuse ``act:tensor`` runs.
=================  ===========================================================================
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from .errors import ConfigError


class QuantScheme(str, enum.Enum):
    """Weight formats of the compressed backbone's linear layers."""

    NONE = "none"
    INT8 = "int8"  # symmetric per output channel
    INT4 = "int4"  # symmetric per group
    NF4 = "nf4"  # bitsandbytes
    BNB_INT8 = "bnb-int8"  # bitsandbytes LLM.int8

    @property
    def is_bnb(self) -> bool:
        return self in (QuantScheme.NF4, QuantScheme.BNB_INT8)

    @property
    def bits(self) -> int:
        return {"none": 32, "int8": 8, "int4": 4, "nf4": 4, "bnb-int8": 8}[self.value]


class ActGranularity(str, enum.Enum):
    """Which values share one int8 activation scale (and zero point) at run time."""

    TOKEN = "token"  # one per token (row): XNNPACK's dynamic int8 kernels (ExecuTorch)
    TENSOR = "tensor"  # one per tensor, i.e. per example at batch 1: ONNX Runtime's DynamicQuantizeLinear


class SparsityPattern(str, enum.Enum):
    UNSTRUCTURED = "unstructured"
    SEMI_2_4 = "2:4"


class EmbeddingQuant(str, enum.Enum):
    NONE = "none"
    INT8 = "int8"  # per row
    INT4 = "int4"  # per group of EMBEDDING_INT4_GROUP

    @property
    def bits(self) -> int:
        return {"none": 32, "int8": 8, "int4": 4}[self.value]

    @property
    def group_size(self) -> int | None:
        """Hidden values per scale: None = one scale per row."""
        return EMBEDDING_INT4_GROUP if self == EmbeddingQuant.INT4 else None


#: Group size of int4 embedding tables: the int4 grid is too coarse for one scale per row.
EMBEDDING_INT4_GROUP = 32


def _check_fraction(name: str, value: float, *, upper_inclusive: bool = False) -> None:
    ok = 0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0
    if not ok:
        raise ConfigError(f"compression.{name} must be in [0, 1), got {value!r}")


@dataclasses.dataclass(frozen=True)
class CompressionSpec:
    """What happens to the backbone, in this order: structured pruning, magnitude pruning,
    quantization. All of it is deterministic: the same weights and spec give the same bytes."""

    quant: QuantScheme = QuantScheme.NONE
    group_size: int | None = None  # int4: input channels per scale; None = per output channel
    act_quant: bool = True  # int8/int4: simulate the int8 dynamic activations the target runs
    act_granularity: ActGranularity = ActGranularity.TOKEN  # int8 only: TENSOR for ONNX Runtime's int8 kernels
    deploy_quant: QuantScheme | None = None  # bnb formats: what the mobile target stores instead
    deploy_group_size: int | None = None
    sparsity: float = 0.0
    sparsity_pattern: SparsityPattern = SparsityPattern.UNSTRUCTURED
    prune_heads: float = 0.0
    prune_ffn: float = 0.0
    embeddings: EmbeddingQuant = EmbeddingQuant.NONE

    def __post_init__(self) -> None:
        for field, enum_type in (("quant", QuantScheme), ("sparsity_pattern", SparsityPattern),
                                 ("embeddings", EmbeddingQuant), ("act_granularity", ActGranularity)):
            value = getattr(self, field)
            if not isinstance(value, enum_type):
                try:
                    object.__setattr__(self, field, enum_type(value))
                except ValueError:
                    choices = ", ".join(e.value for e in enum_type)
                    raise ConfigError(f"compression.{field}: unknown value {value!r} (choices: {choices})") from None
        if self.deploy_quant is not None and not isinstance(self.deploy_quant, QuantScheme):
            object.__setattr__(self, "deploy_quant", QuantScheme(self.deploy_quant))
        if self.quant == QuantScheme.INT4 and self.group_size is None:
            object.__setattr__(self, "group_size", 32)
        if self.group_size is not None:
            if self.quant != QuantScheme.INT4:
                raise ConfigError(f"compression.group_size={self.group_size} only applies to int4, not {self.quant.value}")
            if self.group_size <= 0 or self.group_size % 2:
                raise ConfigError(f"compression.group_size must be a positive even number, got {self.group_size}")
        if self.quant.is_bnb:
            if self.deploy_quant is None:
                object.__setattr__(self, "deploy_quant", QuantScheme.INT4 if self.quant == QuantScheme.NF4 else QuantScheme.INT8)
            if self.deploy_quant not in (QuantScheme.INT4, QuantScheme.INT8):
                raise ConfigError(f"compression.deploy_quant must be int4 or int8 for {self.quant.value}, got {self.deploy_quant.value}")
            if self.deploy_quant == QuantScheme.INT4 and self.deploy_group_size is None:
                object.__setattr__(self, "deploy_group_size", 32)
        elif self.deploy_quant is not None:
            raise ConfigError(f"compression.deploy_quant only applies to bitsandbytes formats, not {self.quant.value}")
        if not self.act_quant and self.quant not in (QuantScheme.INT4, QuantScheme.INT8):
            raise ConfigError(f"compression.act_quant=False ('noact') only applies to int4/int8, not {self.quant.value}")
        if self.act_granularity == ActGranularity.TENSOR and (self.quant != QuantScheme.INT8 or not self.act_quant):
            # Per-tensor int8 activations are what ONNX Runtime's int8 MatMul kernels run; its int4
            # MatMulNBits runs float (or per-block) activations, so the simulation would match no target.
            raise ConfigError("compression.act_granularity='tensor' ('act:tensor') needs int8 weights with int8 "
                              f"activations, not {self.quant.value}" + ("" if self.act_quant else " with 'noact'"))
        _check_fraction("sparsity", self.sparsity)
        _check_fraction("prune_heads", self.prune_heads)
        _check_fraction("prune_ffn", self.prune_ffn)
        if self.sparsity_pattern == SparsityPattern.SEMI_2_4 and self.sparsity not in (0.0, 0.5):
            raise ConfigError(f"compression.sparsity must be 0.5 for the 2:4 pattern, got {self.sparsity}")

    @property
    def per_tensor_activations(self) -> bool:
        """Trained for one int8 activation scale per tensor (`act:tensor`, ONNX Runtime's scheme):
        the one place targets, the trainer and export defaults read it from."""
        return self.act_granularity == ActGranularity.TENSOR

    def deployed(self) -> tuple[QuantScheme, int | None]:
        """(weight format, group size) the backbone linears are stored in on a device: the trained
        format, or for bitsandbytes formats the one they are re-quantized to (`deploy:`). The one
        place every target and the validator read this from."""
        if self.quant.is_bnb:
            return self.deploy_quant, self.deploy_group_size
        return self.quant, self.group_size

    # ---- forms -------------------------------------------------------------------------------
    @property
    def is_identity(self) -> bool:
        return self == CompressionSpec()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, enum.Enum):
                out[k] = v.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompressionSpec":
        if not isinstance(data, dict):
            raise ConfigError(f"compression: expected an object of spec fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ConfigError(f"compression: unknown field(s) {unknown}")
        bad = [k for k in ("group_size", "deploy_group_size") if data.get(k) is not None
               and (isinstance(data[k], bool) or not isinstance(data[k], int))]
        bad += [k for k in ("sparsity", "prune_heads", "prune_ffn") if k in data
                and (isinstance(data[k], bool) or not isinstance(data[k], (int, float)))]
        bad += [k for k in ("act_quant",) if k in data and not isinstance(data[k], bool)]
        if bad:
            raise ConfigError(f"compression: field(s) {bad} have the wrong type in {data!r}")
        try:
            return cls(**data)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"compression: invalid spec ({exc})") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def __str__(self) -> str:
        parts: list[str] = []
        if self.quant == QuantScheme.INT4:
            parts.append(f"int4:g{self.group_size}")
        elif self.quant != QuantScheme.NONE:
            parts.append(self.quant.value)
        if self.deploy_quant is not None:
            parts.append(f"deploy:int4:g{self.deploy_group_size}" if self.deploy_quant == QuantScheme.INT4 else "deploy:int8")
        if self.quant in (QuantScheme.INT4, QuantScheme.INT8) and not self.act_quant:
            parts.append("noact")
        if self.act_granularity != ActGranularity.TOKEN:
            parts.append(f"act:{self.act_granularity.value}")
        if self.sparsity_pattern == SparsityPattern.SEMI_2_4 and self.sparsity:
            parts.append("sparse:2:4")
        elif self.sparsity:
            parts.append(f"sparse:{self.sparsity:g}")
        if self.prune_heads:
            parts.append(f"heads:{self.prune_heads:g}")
        if self.prune_ffn:
            parts.append(f"ffn:{self.prune_ffn:g}")
        if self.embeddings != EmbeddingQuant.NONE:
            parts.append(f"emb:{self.embeddings.value}")
        return "+".join(parts) or "none"

    @classmethod
    def parse(cls, text: str) -> "CompressionSpec":
        """Parse the command-line form (see the module docstring)."""
        kw: dict[str, Any] = {}
        text = text.strip()
        if not text:
            raise ConfigError("--compression: empty spec; name the compression (e.g. int4:g32+sparse:0.5) or 'none'")
        if text == "none":
            return cls()
        seen: dict[str, str] = {}
        for token in text.split("+"):
            head, _, rest = token.strip().partition(":")
            if not head:
                raise ConfigError(f"--compression {text!r}: empty token (two '+' in a row, or a '+' at an end)")
            # One token per aspect: 'int4+int8' would silently keep the last weight format.
            aspect = "weight format" if head in ("int4", "int8", "nf4", "bnb-int8", "none") else head
            if aspect in seen:
                raise ConfigError(f"--compression {text!r}: {seen[aspect]!r} and {token.strip()!r} both set the "
                                  f"{aspect}; name it once")
            seen[aspect] = token.strip()
            try:
                if head in ("int4", "int8", "nf4", "bnb-int8"):
                    kw["quant"] = QuantScheme(head)
                    if rest:
                        kw["group_size"] = _group(rest, token)
                elif head == "deploy":
                    kind, _, g = rest.partition(":")
                    kw["deploy_quant"] = QuantScheme(kind)
                    if g:
                        kw["deploy_group_size"] = _group(g, token)
                elif head == "noact":
                    if rest:
                        raise ConfigError(f"--compression: 'noact' takes no value, got {token!r}")
                    kw["act_quant"] = False
                elif head == "act":
                    if rest not in {g.value for g in ActGranularity}:
                        raise ConfigError(f"--compression: {token!r}: activation granularity must be one of "
                                          f"{', '.join('act:' + g.value for g in ActGranularity)}")
                    kw["act_granularity"] = ActGranularity(rest)
                elif head == "sparse":
                    if rest == "2:4":
                        kw["sparsity"], kw["sparsity_pattern"] = 0.5, SparsityPattern.SEMI_2_4
                    else:
                        kw["sparsity"] = _fraction(rest, token, "sparsity")
                elif head == "heads":
                    kw["prune_heads"] = _fraction(rest, token, "prune_heads")
                elif head == "ffn":
                    kw["prune_ffn"] = _fraction(rest, token, "prune_ffn")
                elif head == "emb":
                    kw["embeddings"] = EmbeddingQuant(rest)
                else:
                    raise ConfigError(f"--compression: unknown token {token!r} in {text!r}")
            except ValueError as exc:
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(f"--compression: cannot read token {token!r} in {text!r}: {exc}") from None
        try:
            return cls(**kw)
        except ConfigError as exc:
            raise ConfigError(f"--compression {text!r}: {exc}") from None


def _fraction(text: str, token: str, field: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:  # NaN fails this too; 0 would be a no-op token, 1 would remove everything
        raise ConfigError(f"--compression: {token!r}: compression.{field} must be a fraction between 0 and 1 "
                          "(exclusive)")
    return value


def _group(text: str, token: str) -> int:
    if not text.startswith("g") or not text[1:].isdigit():
        raise ConfigError(f"--compression: group size must look like g32, got {token!r}")
    return int(text[1:])


#: The offline default: the FACTS reference mix (int4 group-32 weights with int8 dynamic
#: activations + 50% unstructured magnitude pruning) plus int8 embeddings, which are half of
#: MiniLM's parameters and must shrink too for a phone-sized artifact.
DEFAULT_COMPRESSION = "int4:g32+sparse:0.5+emb:int8"

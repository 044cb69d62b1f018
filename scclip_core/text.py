"""Class text: parsing what users type, prompt templates, and cached text embeddings."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import text_global_pool
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
from torch import Tensor

from .backbones import LoadedModel
from .cache import CacheWarning, atomic_write, default_cache_dir
from .config import TEMPLATE_SET_NAMES, SegmenterConfig, TemplateSet
from .errors import InputError
from .prompt_encoding import KeptPrefixes, SharedPrefixTower
from .vocabularies import BACKGROUND_NAME, display_names

DEFAULT_BACKGROUND_WORDS: tuple[str, ...] = (
    "sky",
    "wall",
    "tree",
    "wood",
    "grass",
    "road",
    "sea",
    "river",
    "mountain",
    "sands",
    "desk",
    "bed",
    "building",
    "cloud",
    "lamp",
    "door",
    "window",
    "wardrobe",
    "ceiling",
    "shelf",
    "curtain",
    "stair",
    "floor",
    "hill",
    "rail",
    "fence",
)
MAX_NAME_CHARS = 200
TEMPLATE_SETS: dict[TemplateSet, Sequence[Callable[[str], str]]] = {
    "openai": OPENAI_IMAGENET_TEMPLATES,
    "simple": SIMPLE_IMAGENET_TEMPLATES,
}
_CLASS_SEPARATOR = re.compile(r"[;\n\r]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PRUNE_EVERY = 512
_ENTRY_FORMAT = 1
_ENTRY_DTYPE = "<f4"
ENTRY_SUFFIX = ".emb"
_ENTRY_SUFFIXES = (ENTRY_SUFFIX, ".npy")  # the second: entries of older versions, pruned but never read
PROBE_NAMES = ("x", "0", "-")  # a letter, a digit, a sign: their prompts part at the name, never before it


@dataclass(frozen=True)
class Vocabulary:
    """Classes as tuples of synonyms (the first is the display name) and which class is background.

    The background class may have no synonyms: it then gets no text query and only catches the pixels that the
    probability or area thresholds reject.
    """

    classes: tuple[tuple[str, ...], ...]
    background_index: int | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise InputError("no classes given: type at least one class name")
        if self.background_index is not None and not 0 <= self.background_index < len(self.classes):
            raise InputError(f"background_index {self.background_index} is not a class index")
        for index, synonyms in enumerate(self.classes):
            if not synonyms and index != self.background_index:
                raise InputError(f"class {index + 1} has no name")
        if not any(self.classes):
            raise InputError("no class has a name to search for")

    @property
    def names(self) -> list[str]:
        """One display name per class (see `display_names`)."""
        return display_names(self.classes, self.background_index)

    @property
    def queries(self) -> list[str]:
        """Every synonym once per class, in class order: the texts that get embedded."""
        return [name for synonyms in self.classes for name in synonyms]

    @property
    def query_classes(self) -> list[int]:
        """For each query, the index of its class."""
        return [index for index, synonyms in enumerate(self.classes) for _ in synonyms]

    def with_background(self, words: Sequence[str] = ()) -> Vocabulary:
        """This vocabulary with a background class appended (query-less if `words` is empty), unless it has one."""
        if self.background_index is not None:
            return self
        return Vocabulary(self.classes + (tuple(words),), len(self.classes))


def _clean(name: str) -> str:
    return " ".join(_CONTROL.sub(" ", name).split())


def parse_classes(text: str, *, background: Sequence[str] | None = DEFAULT_BACKGROUND_WORDS) -> Vocabulary:
    """Parse `sky, cloud; grass; person`: `;` or newlines between classes, `,` between synonyms.

    With `background` words, a class named "background" with those words is appended last; words that the user
    also typed as a class are left out of it, and a class the user named "background" is used as it is.
    """
    if not isinstance(text, str):
        raise InputError(f"class text must be a string, not {type(text).__name__}")
    classes: list[tuple[str, ...]] = []
    seen: dict[str, int] = {}
    for chunk in _CLASS_SEPARATOR.split(text):
        synonyms = tuple(dict.fromkeys(name for name in (_clean(part) for part in chunk.split(",")) if name))
        if not synonyms:
            continue
        for name in synonyms:
            if len(name) > MAX_NAME_CHARS:
                raise InputError(
                    f"class name {name[:40]!r}... is {len(name)} characters long; the limit is {MAX_NAME_CHARS}"
                )
        key = synonyms[0].lower()
        if key in seen:
            raise InputError(f"class {synonyms[0]!r} is listed twice; merge the two entries with ',' as synonyms")
        seen[key] = len(classes)
        classes.append(synonyms)
    if not classes:
        raise InputError("no classes given: type class names separated by ';' or new lines, synonyms by ','")
    if BACKGROUND_NAME in seen:
        return Vocabulary(tuple(classes), seen[BACKGROUND_NAME])
    if background:
        typed = {name.lower() for synonyms in classes for name in synonyms}
        words = tuple(dict.fromkeys(w for w in (_clean(word) for word in background) if w and w.lower() not in typed))
        return Vocabulary(tuple(classes) + (words,), len(classes))
    return Vocabulary(tuple(classes))


def parse_words(text: str | None) -> tuple[str, ...]:
    """Background words as typed: separated by commas, semicolons or new lines."""
    return tuple(dict.fromkeys(w for w in (_clean(part) for part in re.split(r"[,;\n\r]+", text or "")) if w))


class TextEmbeddingCache:
    """Normalised text embeddings per (model key, template set, name): in memory, and on disk given a folder.

    The model key fingerprints the weights' content, so entries are valid across runs and processes. Disk
    entries are small files named by a hash of the key and written atomically, so processes can share the
    folder. Each holds a one-line JSON header (the key's full hash, dtype, shape and a blake2b checksum of the
    values) and the float32 values; a read checks all of it, and the values are finite. An entry that fails is
    damaged (a disk that filled up, bit rot, another key's file): it is reported once with a `CacheWarning`,
    deleted, and computed again. The folder is kept under `max_bytes` by deleting the least recently used
    entries (a read refreshes an entry). A folder that cannot be written turns the disk side off with one
    warning, so the run goes on in memory.
    """

    def __init__(
        self, directory: str | Path | None = None, *, max_entries: int = 20000, max_bytes: int = 256 * 2**20
    ) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._memory: OrderedDict[tuple[str, str, str], Tensor] = OrderedDict()
        self._rejected: set[Path] = set()  # damaged entries already reported, that could not be deleted
        self._writes_since_prune = _PRUNE_EVERY - 1  # the first write checks the folder's size
        if self.directory:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                self._disable_disk(error)

    @classmethod
    def default(cls) -> TextEmbeddingCache:
        """The shared on-disk cache: `$SCCLIP_CACHE/text-embeddings` (default `~/.cache/scclip/...`)."""
        return cls(default_cache_dir() / "text-embeddings")

    def __len__(self) -> int:
        return len(self._memory)

    def _disable_disk(self, error: OSError) -> None:
        warnings.warn(
            f"text-embedding cache folder {self.directory} is not usable ({error}); caching in memory only",
            CacheWarning,
            stacklevel=3,
        )
        self.directory = None

    @staticmethod
    def _file(directory: Path, key: tuple[str, str, str]) -> Path:
        digest = _key_digest(key)
        return directory / digest[:2] / f"{digest[:32]}{ENTRY_SUFFIX}"

    def get(self, key: tuple[str, str, str], width: int | None = None) -> Tensor | None:
        """The embedding of `key`, or None when it is not cached (or its disk entry is damaged).

        `width` is the embedding width the caller expects (None: any); a disk entry of another width is damaged.
        """
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.directory is None:
            return None
        path = self._file(self.directory, key)
        if path in self._rejected:
            return None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            self._reject(path, f"unreadable: {error}")
            return None
        entry = _decode_entry(data, key, width)
        if isinstance(entry, str):
            self._reject(path, entry)
            return None
        try:
            os.utime(path)
        except OSError:
            pass  # a folder shared read-only: the entry is still good, only its age is not refreshed
        value = torch.from_numpy(entry)
        self._remember(key, value)
        return value

    def _reject(self, path: Path, problem: str) -> None:
        """Report a damaged entry once and delete it, so that it is computed and written again."""
        warnings.warn(
            f"text-embedding cache entry {path} is damaged ({problem}); deleted, it is computed again",
            CacheWarning,
            stacklevel=4,
        )
        try:
            path.unlink(missing_ok=True)
        except OSError:
            self._rejected.add(path)

    def put(self, key: tuple[str, str, str], value: Tensor) -> None:
        """Keep `value` in memory and write its disk entry atomically; a failed write turns the disk side off."""
        self._remember(key, value)
        if self.directory is None:
            return
        path = self._file(self.directory, key)
        self._rejected.discard(path)
        try:
            atomic_write(path, _encode_entry(key, value.detach().cpu().float().numpy()))
        except OSError as error:
            self._disable_disk(error)
            return
        self._writes_since_prune += 1
        if self._writes_since_prune >= _PRUNE_EVERY:
            self.prune()

    def prune(self) -> None:
        """Delete the least recently used disk entries until the folder is under 80 % of `max_bytes`.

        Entries in an older version's format (`.npy`, never read) count and go first as they age.
        """
        self._writes_since_prune = 0
        if self.directory is None:
            return
        entries = []
        for path in self.directory.glob("*/*"):
            if path.suffix not in _ENTRY_SUFFIXES or path.name.startswith("."):
                continue
            try:
                status = path.stat()
            except OSError:
                continue
            entries.append((status.st_mtime_ns, status.st_size, path))
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return
        for _, size, path in sorted(entries):
            if total <= 0.8 * self.max_bytes:
                break
            try:
                path.unlink(missing_ok=True)
            except OSError:
                continue
            total -= size

    def _remember(self, key: tuple[str, str, str], value: Tensor) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)


def _key_digest(key: tuple[str, str, str]) -> str:
    return hashlib.sha256("\x1f".join(key).encode()).hexdigest()


def _encode_entry(key: tuple[str, str, str], values: np.ndarray) -> bytes:
    """A disk entry: the JSON header line, then the values as little-endian float32."""
    payload = np.ascontiguousarray(values, dtype=_ENTRY_DTYPE).tobytes()
    header = {
        "format": _ENTRY_FORMAT,
        "key": _key_digest(key),
        "dtype": _ENTRY_DTYPE,
        "shape": list(values.shape),
        "blake2b": hashlib.blake2b(payload, digest_size=16).hexdigest(),
    }
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def _decode_entry(data: bytes, key: tuple[str, str, str], width: int | None) -> np.ndarray | str:
    """The values of a disk entry for `key`, or why the entry cannot be used."""
    head, newline, payload = data.partition(b"\n")
    if not newline:
        return f"no header in its {len(data)} bytes"
    try:
        header = json.loads(head)
    except ValueError:
        return "the header is not JSON"
    if not isinstance(header, dict) or header.get("format") != _ENTRY_FORMAT:
        return "not an entry of this format"
    if header.get("key") != _key_digest(key):
        return "written for another model, template set or name"
    shape = header.get("shape")
    if header.get("dtype") != _ENTRY_DTYPE or not (isinstance(shape, list) and len(shape) == 1):
        return f"dtype {header.get('dtype')} and shape {shape}, not a vector of float32"
    if width is not None and shape != [width]:
        return f"{shape[0]} values, not the model's {width}"
    if len(payload) != 4 * shape[0]:
        return f"{len(payload)} bytes of values for {shape[0]} float32"
    if hashlib.blake2b(payload, digest_size=16).hexdigest() != header.get("blake2b"):
        return "its checksum does not match its values"
    values = np.frombuffer(payload, dtype=_ENTRY_DTYPE).astype(np.float32)
    if not np.isfinite(values).all():
        return "values that are not finite"
    return values


def shortened_length(tokens: Tensor) -> int:
    """The positions `encode_prompts` runs for a batch of tokenised prompts (P, L): up to the last non-padding one."""
    return int((tokens != 0).int().cumsum(dim=1).argmax(dim=1).max()) + 1


def encode_prompts(clip: CLIP | CustomTextCLIP, tokens: Tensor, shorten: bool = True) -> Tensor:
    """Text features of tokenised prompts, unnormalised, (P, L) -> (P, E).

    With `shorten`, the text transformer runs only up to the longest prompt in the batch: under the causal
    mask later positions never influence earlier ones, so this equals full-length encoding.
    """
    causal = getattr(clip, "attn_mask", None) is not None and hasattr(clip, "token_embedding")
    if not (shorten and causal):
        return clip.encode_text(tokens)
    length = shortened_length(tokens)
    tokens = tokens[:, :length]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = text_global_pool(clip.ln_final(x), tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    projection = clip.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


class TextEncoder:
    """Embeds class names with prompt templates (per-template normalise, mean, renormalise), cached.

    Prompts are encoded prefix-shared (`prompt_encoding.SharedPrefixTower`) when the model's text tower admits
    it, otherwise with the shortened context of `encode_prompts`; both equal open_clip's `encode_text`. The
    templates' prefixes up to the name run at the first encoding and are kept for every later one (`prefixes`),
    so a call of one or two names runs only their own tokens.
    """

    def __init__(
        self,
        model: LoadedModel,
        templates: TemplateSet = SegmenterConfig.templates,
        cache: TextEmbeddingCache | None = None,
        batch_size: int = 512,
    ) -> None:
        if templates not in TEMPLATE_SET_NAMES:
            raise InputError(f"templates must be one of {list(TEMPLATE_SET_NAMES)}, not {templates!r}")
        self.model = model
        self.template_set = templates
        self.templates = TEMPLATE_SETS[templates]
        self.cache = cache if cache is not None else TextEmbeddingCache.default()
        self.batch_size = batch_size
        self.width: int | None = getattr(model.clip.visual, "output_dim", None)  # what a cached embedding must be
        self.tower = SharedPrefixTower.of(model.clip)  # None: a tower of another form, encoded by `encode_prompts`
        self._prefixes: KeptPrefixes | None = None
        self._prefixes_lock = threading.Lock()

    def _warn_if_truncated(self, name: str) -> str | None:
        tokenizer = self.model.tokenizer
        context = getattr(tokenizer, "context_length", 77)
        encode = getattr(tokenizer, "encode", None)
        if encode is None:
            return None
        longest = max(len(encode(template(name))) for template in self.templates) + 2
        if longest <= context:
            return None
        message = f"class name {name[:40]!r} is too long for the {context}-token text context and was truncated"
        warnings.warn(message, stacklevel=3)
        return message

    def embed(self, names: Sequence[str], notices: list[str] | None = None) -> Tensor:
        """(len(names), E) float32 unit vectors on the CPU; names already in the cache cost nothing."""
        embeddings: dict[str, Tensor] = {}
        missing = []
        for name in dict.fromkeys(names):
            cached = self.cache.get(self._key(name), self.width)
            if cached is None:
                missing.append(name)
            else:
                embeddings[name] = cached
        if missing:
            for name in missing:
                message = self._warn_if_truncated(name)
                if message and notices is not None:
                    notices.append(message)
            for name, embedding in zip(missing, self._encode_names(missing)):
                self.cache.put(self._key(name), embedding)
                embeddings[name] = embedding  # kept here too: a small cache may already have evicted it
        return torch.stack([embeddings[name] for name in names]) if names else torch.empty(0)

    def _key(self, name: str) -> tuple[str, str, str]:
        return self.model.key, self.template_set, name

    def uncached(self, names: Sequence[str]) -> list[str]:
        """The names (each once, in order) whose embeddings `embed` would have to compute."""
        return [name for name in dict.fromkeys(names) if self.cache.get(self._key(name), self.width) is None]

    def prefixes(self) -> KeptPrefixes | None:
        """The templates' prefixes shared by the prompts of `PROBE_NAMES` (None without a prefix-shared tower):
        run at the first call, then kept. Made under a lock and then only read, so threads may share the encoder."""
        if self.tower is None:
            return None
        with self._prefixes_lock:
            if self._prefixes is None:
                prompts = [template(name) for name in PROBE_NAMES for template in self.templates]
                with torch.inference_mode():
                    tokens = self.model.tokenizer(prompts).to(self.model.device)
                    self._prefixes = self.tower.keep_prefixes(tokens.view(len(PROBE_NAMES), len(self.templates), -1))
            return self._prefixes

    def _encode_names(self, names: list[str]) -> Tensor:
        """(N, E) embeddings of `names`: prefix-shared encoding on a tower that admits it, else shortened batches."""
        prompts = [template(name) for name in names for template in self.templates]
        with torch.inference_mode():
            tokens = self.model.tokenizer(prompts).to(self.model.device)
            if self.tower is not None:
                grid = tokens.view(len(names), len(self.templates), -1)
                features = self.tower.encode(grid, self.batch_size, self.prefixes())
            else:
                batches = [
                    encode_prompts(self.model.clip, tokens[start : start + self.batch_size])
                    for start in range(0, len(prompts), self.batch_size)
                ]
                features = torch.cat(batches).view(len(names), len(self.templates), -1)
        per_template = F.normalize(features.float(), dim=-1)
        return F.normalize(per_template.mean(dim=1), dim=-1).cpu()

"""Captions for TAS's P-score and N-score: a captioner, noun-phrase extraction, synonym removal.

- `OpenClipCocaCaptioner`: open_clip's CoCa `generate()`; the weights must be on disk (no
  download at run time), else RuntimeError naming the file to provide.
- `build_captioner(enabled, ...)`: the captioner, or None when disabled or when its weights are
  missing (then ONE warning 'P-score off: ...'; TAS runs without P-score and takes its negatives
  from the matcher's vocabulary instead).
- `noun_phrases(caption)`: a dependency-free heuristic (no tagger download): lower-case, drop
  punctuation, cut the word sequence at stop words (articles, prepositions, conjunctions, pronouns,
  auxiliaries, common verbs) and at gerunds/participles ending in -ing; every remaining run of
  words is a phrase, shortened to its last `max_words` words (English noun phrases end in their
  head noun). "a man riding a brown horse on the beach" -> ['man', 'brown horse', 'beach'].
- `is_synonym(phrase, target)`: WordNet path similarity >= 0.5 between the phrases' head nouns
  when nltk and its wordnet data are installed; otherwise the small table `SYNONYMS` (a class word,
  as prompts spell it -> common words for it). Either way a phrase whose head noun equals the target's (or its plural)
  is a synonym.
"""
from __future__ import annotations

import logging
import re
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

STOP_WORDS = frozenset("""
a an the this that these those some any each every no another other its it their his her our your my
of in on at to from by with without for about into onto over under above below behind near next beside
between through across along around against among up down out off inside outside front top bottom
left right side middle center centre
and or but while as than then there here which who whom whose what where when
is are was were be been being has have had do does did can could will would may might
i you he she we they them him us me
sits sit stands stand lies lie looks look holds hold rides ride shows show seen
very two three four several many one few lot lots of group pair view picture image photo close
""".split())

#: Offline synonym table (used when nltk/wordnet is not available): words that refer to a class, keyed by the
#: class word as prompts spell it. Classes missing here only match their own word.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "aeroplane": ("airplane", "plane", "jet", "aircraft", "airliner"),
    "bicycle": ("bike", "cycle"),
    "bird": ("parrot", "duck", "eagle", "gull", "seagull", "owl", "swan", "goose", "chicken", "hen"),
    "boat": ("ship", "sailboat", "yacht", "canoe", "kayak", "ferry", "vessel"),
    "bottle": ("wine", "beer", "flask"),
    "bus": ("coach", "minibus"),
    "car": ("automobile", "vehicle", "taxi", "suv", "van", "truck"),
    "cat": ("kitten", "kitty"),
    "chair": ("seat", "stool", "armchair"),
    "cow": ("cattle", "bull", "calf", "ox"),
    "dining table": ("table", "desk"),
    "dog": ("puppy", "pup", "doggy"),
    "horse": ("pony", "foal", "stallion"),
    "motorbike": ("motorcycle", "scooter", "moped"),
    "person": ("man", "men", "woman", "women", "people", "boy", "girl", "child", "children", "kid",
               "kids", "baby", "guy", "lady", "player", "rider", "persons", "adult"),
    "potted plant": ("plant", "flower", "flowers", "pot"),
    "sheep": ("lamb", "ram"),
    "sofa": ("couch", "settee"),
    "train": ("locomotive", "railway", "tram"),
    "tv monitor": ("tv", "television", "monitor", "screen", "computer", "display"),
}
_CLASS_BY_WORD = {word: word for word in SYNONYMS}


class Captioner(Protocol):
    def caption(self, image: np.ndarray) -> str: ...


def noun_phrases(caption: str, max_words: int = 2) -> list[str]:
    """Noun phrases of a caption by the stop-word heuristic of the module docstring (unique, in order)."""
    words = re.findall(r"[a-z]+", caption.lower())
    phrases, run = [], []
    for w in words + ["."]:
        if w == "." or w in STOP_WORDS or (w.endswith("ing") and len(w) > 4) or len(w) < 2:
            if run:
                phrases.append(" ".join(run[-max_words:]))
            run = []
        else:
            run.append(w)
    return list(dict.fromkeys(phrases))


def _head(phrase: str) -> str:
    words = phrase.lower().split()
    return words[-1] if words else ""


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def _wordnet():
    try:
        from nltk.corpus import wordnet
        wordnet.synsets("dog")  # raises LookupError without the data
        return wordnet
    except (ImportError, LookupError):
        return None


def is_synonym(phrase: str, target: str, wordnet_threshold: float = 0.5) -> bool:
    """Whether `phrase` names the same thing as `target` (rule in the module docstring)."""
    ph, th = _singular(_head(phrase)), _singular(_head(target))
    if ph == th or phrase.lower() == target.lower():
        return True
    wn = _wordnet()
    if wn is not None:
        best = 0.0
        for a in wn.synsets(ph, pos=wn.NOUN)[:3]:
            for b in wn.synsets(th, pos=wn.NOUN)[:3]:
                best = max(best, a.path_similarity(b) or 0.0)
        return best >= wordnet_threshold
    t_cls, p_cls = _class_of(target), _class_of(phrase)
    if t_cls is not None and t_cls == p_cls:
        return True
    for cls, other in ((t_cls, phrase), (p_cls, target)):
        if cls is not None and {other.lower(), _head(other), _singular(_head(other))} & set(SYNONYMS.get(cls, ())):
            return True
    return False


def _class_of(text: str) -> str | None:
    """The SYNONYMS class word a phrase names directly (whole phrase or its head noun), else None."""
    text = text.lower().strip()
    return _CLASS_BY_WORD.get(text) or _CLASS_BY_WORD.get(_singular(_head(text)))


class OpenClipCocaCaptioner:
    """CoCa captioner through open_clip's generate().

    arch/pretrained: an open_clip CoCa architecture and a tag or local checkpoint file; the file
    must already be on disk (RuntimeError naming it otherwise). max_len: caption tokens (20).
    """

    def __init__(self, arch: str = "coca_ViT-B-32", pretrained: str = "mscoco_finetuned_laion2b_s13b_b90k",
                 max_len: int = 20, device: str = "cpu") -> None:
        import open_clip
        import torch

        from textwsss.guide.open_clip_matcher import resolve_checkpoint

        try:
            checkpoint, _ = resolve_checkpoint(arch, pretrained)
        except RuntimeError as err:  # the message names the file(s) to provide
            raise RuntimeError(f"CoCa captioner: {err}".replace("guide.pretrained", "the captioner's pretrained")) from err
        self.model = open_clip.create_model(arch, pretrained=checkpoint).to(device).eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        pp = self.model.visual.preprocess_cfg
        size = self.model.visual.image_size
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = torch.tensor(pp["mean"]).view(1, 3, 1, 1).to(device)
        self.std = torch.tensor(pp["std"]).view(1, 3, 1, 1).to(device)
        self.max_len, self.device = int(max_len), device

    def caption(self, image: np.ndarray) -> str:
        import open_clip
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div(255).to(self.device)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            tokens = self.model.generate((x - self.mean) / self.std, seq_len=self.max_len)
        text = open_clip.decode(tokens[0])
        return text.replace("<start_of_text>", "").split("<end_of_text>")[0].strip(" .")


def build_captioner(enabled: bool, arch: str = "coca_ViT-B-32",
                    pretrained: str = "mscoco_finetuned_laion2b_s13b_b90k", device: str = "cpu") -> Captioner | None:
    """The CoCa captioner, or None when disabled or its weights are missing (one warning)."""
    if not enabled:
        log.warning("P-score off: captioner disabled (negatives come from the matcher vocabulary)")
        return None
    try:
        return OpenClipCocaCaptioner(arch, pretrained, device=device)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        log.warning("P-score off: %s", err)
        return None

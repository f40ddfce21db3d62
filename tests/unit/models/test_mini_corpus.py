"""The generic pretraining corpus of beit3-mini (mwa_cli.models.mini_corpus) and its English tokenizer."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from scripts import mini_corpus as mc
from tests.helpers.paths import REPO

TOKENIZER = REPO / "mwa_cli" / "models" / "mini" / "tokenizer.spm"


# ---------------------------------------------------------------------------------------------- determinism

def test_same_seed_same_bytes_and_captions():
    a_img, a_cap = mc.generate_corpus(24, seed=3)
    b_img, b_cap = mc.generate_corpus(24, seed=3)
    assert a_img.dtype == np.uint8 and a_img.shape == (24, 64, 64, 3)
    assert a_img.tobytes() == b_img.tobytes()
    assert a_cap == b_cap
    c_img, c_cap = mc.generate_corpus(24, seed=4)
    assert c_img.tobytes() != a_img.tobytes() and c_cap != a_cap


def test_sample_depends_only_on_seed_and_index():
    full_img, full_cap = mc.generate_corpus(12, seed=5)
    part_img, part_cap = mc.generate_corpus(4, seed=5, start=8)  # a chunk (as the script's workers make)
    assert part_img.tobytes() == full_img[8:].tobytes() and part_cap == full_cap[8:]
    img, cap = mc.generate_sample(mc.sample_rng(5, 10))
    assert img.mode == "RGB" and img.size == (64, 64)
    assert np.asarray(img).tobytes() == full_img[10].tobytes() and cap == full_cap[10]
    assert mc.generate_captions(12, seed=5) == full_cap


def test_other_sizes_and_rng_kinds():
    img, cap = mc.generate_sample(np.random.default_rng(0), size=96)
    assert img.size == (96, 96) and cap
    img2, cap2 = mc.generate_sample(np.random.default_rng(0), size=96)
    assert np.array_equal(np.asarray(img), np.asarray(img2)) and cap == cap2
    imgs, caps = mc.generate_corpus(3, seed=1, size=32)
    assert imgs.shape == (3, 32, 32, 3) and len(caps) == 3


# -------------------------------------------------------------------------------------------- truthfulness

_ALL_COLOUR_WORDS = {"red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "grey",
                     "gray", "brown", "cyan", "beige"}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _scenes(n=150, seed=11):
    out = []
    for i in range(n):
        img, cap, scene = mc.generate_sample(mc.sample_rng(seed, i), with_meta=True)
        out.append((np.asarray(img).astype(np.int16), cap, scene))
    return out


@pytest.fixture(scope="module")
def scenes():
    return _scenes()


def test_objects_are_drawn_where_the_scene_says(scenes):
    cell = 64 / 3
    for img, cap, scene in scenes:
        masks = scene.meta["masks"]
        assert 1 <= len(scene.objects) <= 3
        for o, m in zip(scene.objects, masks):
            w = m.sum()
            assert w > 3, (cap, o)
            ys, xs = np.mgrid[0:64, 0:64]
            cx, cy = (m * (xs + 0.5)).sum() / w, (m * (ys + 0.5)).sum() / w
            # the drawn pixels' centroid lies in the stated 3x3 cell
            assert (int(cy // cell), int(cx // cell)) == o.cell, (cap, o, cx, cy)
            # fully covered pixels carry the object's colour, and it stands out from the background
            full = m > 0.999
            assert full.any(), (cap, o)
            assert np.abs(img[full] - np.asarray(o.rgb)).max() <= 1, (cap, o)
            assert min(np.abs(np.asarray(o.rgb) - np.asarray(b)).sum() for b in scene.bg_rgb) > 60
            # the size category is the radius range it was drawn with
            lo, hi = mc.SIZES[o.size]
            assert lo * 64 - 1e-6 <= o.r <= hi * 64 + 1e-6
        # objects do not overlap (so none hides another)
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                assert (masks[i] * masks[j]).sum() < 0.5, cap


#: everyday synonym -> the one kind of shape it names (the spec, independent of the implementation);
#: "small circle": only circles that are small; "zigzag": zigzag lines; "line": straight lines
SYNONYMS = {
    "scratch": "line", "stroke": "line", "streak": "line", "mark": "line",
    "crack": "zigzag", "jagged line": "zigzag", "zigzag crack": "zigzag",
    "stain": "blob", "smudge": "blob", "splotch": "blob", "patch": "blob",
    "spot": "small circle", "dot": "small circle", "speck": "small circle",
    "hole": "ring", "circle outline": "ring", "loop": "ring",
    "x mark": "cross",
}


def _noun_kinds() -> dict[str, str]:
    """Every shape noun (singular and plural) the captions use -> the one kind it names."""
    table: dict[str, set[str]] = {}
    pairs = [(k, p) for k in mc.SHAPES for p in mc._SHAPE_WORDS[k]] + [("zigzag", p) for p in mc._ZIGZAG_WORDS]
    pairs += [(kind, p) for kind, ps in mc._SYNONYMS.items() for p in ps]
    for kind, (sing, plur) in pairs:
        table.setdefault(sing, set()).add(kind)
        table.setdefault(plur, set()).add(kind)
    ambiguous = {w: ks for w, ks in table.items() if len(ks) > 1}
    assert not ambiguous, ambiguous
    return {w: ks.pop() for w, ks in table.items()}


NOUN_KINDS = _noun_kinds()
#: singular and plural of each synonym -> its singular
SYN_FORMS = {f: sing for ps in mc._SYNONYMS.values() for sing, plur in ps for f in (sing, plur)}
# longest first, so "x mark" is one cross (not a "mark"), "circle outline" one ring, "irregular spot" one blob
_NOUN_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(NOUN_KINDS, key=len, reverse=True)) + r")\b")


def _kind(o) -> str:
    return "zigzag" if (o.shape == "line" and o.style == "zigzag") else o.shape


def _mentioned_kinds(cap: str) -> list[str]:
    return [NOUN_KINDS[m] for m in _NOUN_RE.findall(cap.lower())]


def _check_shapes_named_truthfully(cap, scene):
    """Every object's kind is named, and every named kind is drawn ("small circle" nouns: a small circle)."""
    mentioned = _mentioned_kinds(cap)
    drawn = {_kind(o) for o in scene.objects}
    small_circles = any(o.shape == "circle" and o.size == "small" for o in scene.objects)
    for k in mentioned:
        if k == "small circle":
            assert small_circles, (cap, k)
        else:
            assert k in drawn, (cap, k)
    named = {("circle" if k == "small circle" else k) for k in mentioned}
    assert drawn <= named, (cap, drawn, mentioned)


def test_synonym_table_is_the_spec_and_unambiguous():
    got = {sing: kind for kind, ps in mc._SYNONYMS.items() for sing, _ in ps}
    assert got == SYNONYMS
    for w, kind in SYNONYMS.items():
        assert NOUN_KINDS[w] == kind, w  # no synonym is also a plain noun of another shape


def test_captions_state_what_and_where_truthfully(scenes):
    for _, cap, scene in scenes:
        low = cap.lower()
        words = _words(low)
        # what: a noun of each object's shape, and no noun of a shape that is not drawn
        _check_shapes_named_truthfully(cap, scene)
        for o in scene.objects:
            # where: a name of its cell
            assert any(n.replace("-", " ") in low.replace("-", " ") for n in mc._POS_NAMES[o.cell]), (cap, o.cell)
        # nothing that is not there: every colour word is an object's or the background's colour
        allowed = {o.colour for o in scene.objects} | set(scene.bg_colour.split())
        allowed |= {"gray"} if "grey" in allowed else set()
        assert (words & _ALL_COLOUR_WORDS) <= allowed, (cap, allowed)
        # counts
        sizes = sorted(len(g) for g in scene.groups)
        if words & {"two", "pair"} or re.search(r"\b2\b", low):
            assert 2 in sizes, cap
        if "three" in words or re.search(r"\b3\b", low):
            assert 3 in sizes, cap
        # size words belong to an object of that size
        if words & {"large", "big", "long"}:
            assert any(o.size == "large" for o in scene.objects), cap
        if words & {"small", "little", "short"}:
            assert any(o.size == "small" for o in scene.objects), cap
        # English only
        assert cap.isascii()


@pytest.fixture(scope="module")
def big_corpus():
    """2000 (scene, caption) pairs, as generate_corpus makes them (without rendering: faster)."""
    out = []
    for i in range(2000):
        rng = mc.sample_rng(31, i)
        scene = mc.sample_scene(rng)
        out.append((scene, mc.caption_scene(scene, rng)))
    assert [c for _, c in out[:50]] == mc.generate_captions(50, seed=31)
    return out


def test_each_synonym_appears_with_its_shape(big_corpus):
    seen = {w: 0 for w in SYNONYMS}
    for scene, cap in big_corpus:
        _check_shapes_named_truthfully(cap, scene)  # truthful over the whole corpus too
        for m in _NOUN_RE.findall(cap.lower()):
            sing = SYN_FORMS.get(m)
            if sing is None:
                continue
            kind = SYNONYMS[sing]
            if kind == "small circle":
                assert any(o.shape == "circle" and o.size == "small" for o in scene.objects), cap
            else:
                assert kind in {_kind(o) for o in scene.objects}, cap
            seen[sing] += 1
    assert all(n >= 5 for n in seen.values()), seen


def test_synonym_rate(big_corpus):
    """About 30 % of the mentions of a shape that has synonyms use one (circles: only where all are small)."""
    syn = used = 0
    for scene, cap in big_corpus:
        all_small = all(o.size == "small" for o in scene.objects if o.shape == "circle")
        for m in _NOUN_RE.findall(cap.lower()):
            k = NOUN_KINDS[m]
            if k in ("square", "triangle", "star") or (k == "circle" and not all_small):
                continue
            used += 1
            syn += m in SYN_FORMS
    assert used > 1000
    assert 0.25 <= syn / used <= 0.35, syn / used


def test_relations_are_true():
    seen = 0
    for i in range(400):
        scene = mc.sample_scene(mc.sample_rng(21, i))
        if scene.relation is None:
            continue
        seen += 1
        a, rel, b = scene.relation
        oa, ob = scene.objects[a], scene.objects[b]
        if rel == "above":
            assert oa.cy < ob.cy and oa.cell[1] == ob.cell[1]
        elif rel == "below":
            assert oa.cy > ob.cy and oa.cell[1] == ob.cell[1]
        elif rel == "left of":
            assert oa.cx < ob.cx and oa.cell[0] == ob.cell[0]
        else:
            assert rel == "right of" and oa.cx > ob.cx and oa.cell[0] == ob.cell[0]
        cap = mc.caption_scene(scene, mc.sample_rng(0, i))
        assert {"above": "above", "below": "below", "left of": "left of", "right of": "right of"}[rel] in cap
    assert seen > 10


def test_corpus_is_varied():
    _, caps, metas = mc.generate_corpus(400, seed=2, with_meta=True)
    assert len(set(caps)) == len(caps)
    shapes = {o["shape"] for m in metas for o in m["objects"]}
    positions = {o["position"] for m in metas for o in m["objects"]}
    colours = {o["colour"] for m in metas for o in m["objects"]}
    kinds = {m["background"]["kind"] for m in metas}
    assert shapes == set(mc.SHAPES)
    assert positions == set(mc.POSITIONS.values())
    assert len(colours) >= 10
    assert kinds == set(mc.BG_KINDS)
    n_obj = {len(m["objects"]) for m in metas}
    assert n_obj == {1, 2, 3}
    assert any(m["relation"] for m in metas)
    # the same single-object scene type is phrased in several ways
    firsts = {c.lower().split()[0] for c in caps}
    assert len(firsts) >= 8


# ---------------------------------------------------------------------------------------------- tokenizer

@pytest.fixture(scope="module")
def sp():
    spm = pytest.importorskip("sentencepiece")
    assert TOKENIZER.is_file(), "run: python scripts/make_mini_corpus.py --tokenizer-only"
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER))


def test_tokenizer_file_and_special_pieces(sp):
    assert TOKENIZER.stat().st_size < 1_000_000
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.unk_id() == 0 and sp.bos_id() == 1 and sp.eos_id() == 2 and sp.pad_id() == -1
    assert 2000 <= sp.get_piece_size() <= 4000


def test_tokenizer_is_stable_english(sp):
    # a fixed sentence encodes to a fixed id list: changing the tokenizer invalidates beit3-mini's weights
    assert sp.encode("two small red circles at the top") == [89, 24, 33, 130, 5, 3, 16]
    sent = "a long scratch on the upper left of a steel plate"
    ids = sp.encode(sent)
    assert 0 not in ids and sp.decode(ids) == sent
    # general English words, including ones inspection captions use, are in the vocabulary
    for w in ("scratch", "crack", "dent", "rust", "hole", "metal", "surface", "defect", "corner", "centre"):
        assert sp.encode(w, out_type=str) == ["▁" + w], w


def test_captions_encode_without_unknown_pieces(sp):
    caps = mc.generate_captions(500, seed=9)
    for cap in caps:
        assert sp.unk_id() not in sp.encode(cap), cap
    # the everyday synonyms are whole words of the vocabulary (so each gets its own trained embedding)
    for w in ("scratch", "stroke", "streak", "mark", "crack", "stain", "splotch", "patch", "spot", "dot", "speck",
              "hole"):
        assert sp.encode(w, out_type=str) == ["\u2581" + w], w
        assert any(re.search(rf"\b{w}\b", c.lower()) for c in caps), w


def test_tokenizer_does_not_cover_japanese(sp):
    for text in ("左上に長い傷がある金属板", "中央に小さな穴", "錆"):
        pieces = [p for p in sp.encode(text) if sp.id_to_piece(p) != "▁"]
        assert pieces and all(p == sp.unk_id() for p in pieces), (text, pieces)


def test_script_help():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_mini_corpus.py"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--tokenizer-only" in r.stdout


def test_script_writes_a_small_corpus(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_mini_corpus.py"), "--out", str(tmp_path),
                        "--n", "30", "--seed", "7", "--chunk", "8", "--meta", "--no-tokenizer"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    imgs = np.load(tmp_path / "images.npy")
    caps = (tmp_path / "captions.txt").read_text(encoding="utf-8").splitlines()
    ref_imgs, ref_caps = mc.generate_corpus(30, seed=7)
    assert imgs.tobytes() == ref_imgs.tobytes() and caps == ref_caps
    assert (tmp_path / "info.json").is_file() and (tmp_path / "scenes.jsonl").is_file()

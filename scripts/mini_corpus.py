"""Synthetic *generic* image-caption corpus used to pretrain the built-in ``beit3-mini`` backbone.

The corpus is deliberately a different domain from the inspection photos users adapt the model to
(coloured shapes on plain and textured backgrounds, not defects on materials), but it shares the basic
visual-linguistic concepts that transfer: positions on a 3x3 grid ("upper left", "centre", ...), sizes
("small", "large", "long", "short"), colours, thin lines, round spots, rings, irregular blobs, counts and
simple spatial relations ("above", "to the left of").

Every caption is generated from the same structured scene the image is rendered from, so it is true: it
names every drawn object (shape, and usually colour and size) and where it is.  The scene is exposed
(:func:`sample_scene`, :func:`generate_sample` with ``with_meta=True``) so tests can check the pixels.

Everyday synonyms: about 30 % of the mentions of a shape that has them use a word a web corpus pairs with
such a shape (a straight line is a "scratch", "streak" or "mark", a zigzag line a "crack", a blob a "stain"
or "smudge", a small circle a "spot" or "speck", a ring a "hole", a cross an "x mark"; see ``_SYNONYMS``),
so that these words -- which inspection captions use -- get trained embeddings.  Each such noun (matched
longest first) names exactly one kind of shape, so the captions stay true and unambiguous.

Determinism: sample ``i`` of a corpus depends only on ``(seed, i)`` (its own ``numpy`` PCG64 generator),
so a corpus can be generated in chunks or in parallel and still be byte-identical.

Speed: objects are rasterised by Pillow at 2x and box-downsampled (anti-aliased edges); backgrounds are
numpy.  About 2.2-2.7k images/s on one CPU core at 64 px (``scripts/make_mini_corpus.py --bench``).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "SHAPES",
    "SIZES",
    "POSITIONS",
    "Obj",
    "Scene",
    "sample_scene",
    "caption_scene",
    "render_scene",
    "generate_sample",
    "generate_corpus",
    "generate_captions",
    "sample_rng",
    "as_rng",
    "CORPUS_VERSION",
]

#: bump when the generator changes in a way that changes its output for a given seed
CORPUS_VERSION = 2  # 2: everyday synonyms (scratch, crack, stain, spot, hole, x mark, ...)

# --------------------------------------------------------------------------------------------------------
# vocabulary of the scenes
# --------------------------------------------------------------------------------------------------------

#: object colours: name -> RGB.  Far apart, so a small per-object jitter keeps the name true.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 70, 225),
    "yellow": (245, 220, 35),
    "orange": (245, 135, 20),
    "purple": (130, 45, 175),
    "pink": (245, 125, 185),
    "white": (248, 248, 248),
    "black": (12, 12, 12),
    "grey": (128, 128, 128),
    "brown": (125, 75, 30),
    "cyan": (40, 205, 225),
}
#: spelling variants used in captions (the pixels do not change)
_COLOUR_WORDS = {"grey": ("grey", "gray")}

#: background base colours: name -> RGB
BG_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "light grey": (190, 190, 190),
    "grey": (128, 128, 128),
    "dark grey": (62, 62, 62),
    "black": (18, 18, 18),
    "beige": (225, 210, 175),
    "light blue": (175, 205, 238),
    "dark blue": (22, 32, 88),
    "dark green": (28, 78, 40),
    "light green": (185, 228, 175),
}
BG_KINDS = ("plain", "noise", "stripes", "gradient", "checker")

SHAPES = ("circle", "square", "triangle", "line", "ring", "star", "cross", "blob")
#: the plain nouns of each shape (straight lines; zigzag lines use _ZIGZAG_WORDS)
_SHAPE_WORDS = {
    "circle": (("circle", "circles"), ("disc", "discs"), ("round spot", "round spots"), ("circle", "circles")),
    "square": (("square", "squares"),),
    "triangle": (("triangle", "triangles"),),
    "line": (("line", "lines"), ("bar", "bars")),
    "ring": (("ring", "rings"), ("hollow circle", "hollow circles")),
    "star": (("star", "stars"),),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "blob": (("blob", "blobs"), ("irregular blob", "irregular blobs"), ("irregular spot", "irregular spots")),
}
_ZIGZAG_WORDS = (("zigzag line", "zigzag lines"),)
#: everyday synonyms a web corpus pairs with such shapes (and that inspection captions use), keyed by the
#: noun kind (see _noun_kind).  Every phrase names exactly one kind, also across the plain nouns above
#: (matched longest first: "x mark" is a cross, "mark" a straight line; "circle outline" a ring).
_SYNONYMS = {
    "line": (("scratch", "scratches"), ("stroke", "strokes"), ("streak", "streaks"), ("mark", "marks")),
    "zigzag": (("crack", "cracks"), ("jagged line", "jagged lines"), ("zigzag crack", "zigzag cracks")),
    "blob": (("stain", "stains"), ("smudge", "smudges"), ("splotch", "splotches"), ("patch", "patches")),
    "small circle": (("spot", "spots"), ("dot", "dots"), ("speck", "specks")),
    "ring": (("hole", "holes"), ("circle outline", "circle outlines"), ("loop", "loops")),
    "cross": (("x mark", "x marks"),),
}
#: share of the mentions (of shapes that have synonyms) phrased with a synonym
_SYNONYM_RATE = 0.3
#: nouns that already say "small": no size word is added to them
_SMALL_NOUNS = frozenset(("dot", "speck"))
_SHAPE_WEIGHTS = {"circle": 1.0, "square": 1.0, "triangle": 1.0, "line": 1.3, "ring": 1.0, "star": 0.8,
                  "cross": 0.8, "blob": 1.1}

#: size category -> (min, max) of the object's extent radius as a fraction of the image side
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.060, 0.085),
    "medium": (0.110, 0.140),
    "large": (0.170, 0.205),
}
_SIZE_WORDS = {
    "small": ("small", "little", "small"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "large"),
}
_LINE_SIZE_WORDS = {"small": ("short",), "medium": ("medium-length",), "large": ("long",)}

#: 3x3 grid (row, col) -> canonical name
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "upper left", (0, 1): "top", (0, 2): "upper right",
    (1, 0): "left", (1, 1): "centre", (1, 2): "right",
    (2, 0): "lower left", (2, 1): "bottom", (2, 2): "lower right",
}
#: bare names (used after "the") per cell
_POS_NAMES = {
    (0, 0): ("upper left", "top left", "upper-left"),
    (0, 1): ("top", "top centre", "top center", "top middle"),
    (0, 2): ("upper right", "top right", "upper-right"),
    (1, 0): ("left", "middle left", "left side"),
    (1, 1): ("centre", "center", "middle"),
    (1, 2): ("right", "middle right", "right side"),
    (2, 0): ("lower left", "bottom left", "lower-left"),
    (2, 1): ("bottom", "bottom centre", "bottom center", "bottom middle"),
    (2, 2): ("lower right", "bottom right", "lower-right"),
}
_CORNERS = {(0, 0), (0, 2), (2, 0), (2, 2)}
_LINE_ORIENT = ("horizontal", "vertical", "diagonal", "diagonal")
_COUNT_WORDS = {2: ("two", "2", "a pair of"), 3: ("three", "3")}


# --------------------------------------------------------------------------------------------------------
# scene
# --------------------------------------------------------------------------------------------------------

@dataclass
class Obj:
    shape: str
    colour: str
    size: str  # small | medium | large
    cell: tuple[int, int]  # (row, col) on the 3x3 grid
    cx: float  # centre, pixels (x to the right, y down)
    cy: float
    r: float  # extent radius, pixels (every shape fits in a circle of radius ~r, see _bound)
    orient: str = ""  # lines: horizontal | vertical | diagonal; others: ""
    style: str = ""  # lines: "" (straight) | "zigzag"
    angle: float = 0.0  # rotation (triangles, blobs) / slope sign for diagonal lines
    rgb: tuple[int, int, int] = (0, 0, 0)  # actual drawn colour (jittered)
    extra: tuple[float, ...] = ()  # blob radii / line width

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    def to_dict(self) -> dict:
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "position": self.position,
                "cell": list(self.cell), "cx": round(self.cx, 2), "cy": round(self.cy, 2),
                "r": round(self.r, 2), "orient": self.orient, "style": self.style, "rgb": list(self.rgb)}


@dataclass
class Scene:
    size: int
    bg_kind: str
    bg_colour: str  # name of the base colour
    bg_rgb: tuple[tuple[int, int, int], ...]  # colours used by the background (1 or 2)
    bg_param: tuple[float, ...]  # kind-specific (stripe period/orientation, checker cell, noise sigma...)
    objects: list[Obj]
    groups: list[list[int]]  # indices into objects; a group of >1 = same shape/colour (a count)
    relation: tuple[int, str, int] | None = None  # (a, "above"|"below"|"left of"|"right of", b)
    seed: int = 0  # drives rendering noise (so the image depends on the scene alone)
    caption: str = ""
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"size": self.size, "background": {"kind": self.bg_kind, "colour": self.bg_colour},
                "objects": [o.to_dict() for o in self.objects], "groups": self.groups,
                "relation": list(self.relation) if self.relation else None, "caption": self.caption}


def sample_rng(seed: int, index: int) -> random.Random:
    """The generator of sample ``index`` of the corpus with ``seed`` (one independent stream per sample)."""
    return random.Random(f"mini-corpus:{int(seed)}:{int(index)}")


def as_rng(rng) -> random.Random:
    """Accept a ``random.Random``, a ``numpy.random.Generator`` or an int seed."""
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(0, 2**63 - 1)))
    return random.Random(int(rng))


def _dist(a, b) -> float:
    return math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2)


def _bound(shape: str, r: float) -> float:
    """Radius of a circle around the centre that contains the drawn shape."""
    return r * (1.15 if shape == "square" else 1.0) + 0.75


_MIN_CONTRAST = 125.0
_BG_NAMES = tuple(BG_COLOURS)
_COLOUR_NAMES = tuple(COLOURS)
_SIZE_NAMES = tuple(SIZES)
_CELLS = tuple(POSITIONS)
_SHAPE_CUM = tuple(np.cumsum([_SHAPE_WEIGHTS[s] for s in SHAPES]).tolist())
_STRIPE_PERIODS = tuple(4.0 + 0.5 * k for k in range(17))  # 4 .. 12 px (quantised: patterns are cached)


@lru_cache(maxsize=4096)
def _colours_ok(bg_rgb: tuple, margin: float) -> tuple[str, ...]:
    """Object colours that stand out from every background colour."""
    return tuple(c for c in _COLOUR_NAMES if all(_dist(COLOURS[c], b) >= _MIN_CONTRAST + margin for b in bg_rgb))


def _sample_background(rng: random.Random):
    kind = rng.choice(BG_KINDS)
    name = rng.choice(_BG_NAMES)
    base = BG_COLOURS[name]
    if kind == "plain":
        return kind, name, (base,), ()
    if kind == "noise":
        return kind, name, (base,), (float(rng.randrange(8, 23)),)
    # two-colour patterns: the second colour is the base shifted in brightness (a subtle texture)
    lum = sum(base) / 3
    shift = rng.uniform(25, 55) * (-1 if lum > 128 else 1)
    second = tuple(int(min(255, max(0, c + shift))) for c in base)
    if kind == "stripes":
        # orientation 0 horizontal, 1 vertical, 2 / 3 the two diagonals
        return kind, name, (base, second), (rng.choice(_STRIPE_PERIODS), float(rng.randrange(4)))
    if kind == "gradient":
        # direction 0 left->right, 1 right->left, 2 top->bottom, 3 bottom->top
        return kind, name, (base, second), (float(rng.randrange(4)),)
    return kind, name, (base, second), (float(rng.randrange(3, 9)),)  # checker cell size


def sample_scene(rng, size: int = 64) -> Scene:
    """Draw a random scene: background + 1-3 non-overlapping objects in distinct 3x3 cells."""
    rng = as_rng(rng)
    bg_kind, bg_name, bg_rgb, bg_param = _sample_background(rng)
    colours_ok = _colours_ok(bg_rgb, 2.0 * bg_param[0] if bg_kind == "noise" else 0.0)

    u = rng.random()
    n_obj = 1 if u < 0.40 else (2 if u < 0.75 else 3)
    cells = rng.sample(_CELLS, n_obj)

    # structure: groups of identical shape+colour (counts)
    if n_obj == 1:
        groups = [[0]]
    elif n_obj == 2:
        groups = [[0, 1]] if rng.random() < 0.3 else [[0], [1]]
    else:
        v = rng.random()
        groups = [[0, 1, 2]] if v < 0.2 else ([[0, 1], [2]] if v < 0.4 else [[0], [1], [2]])

    cell_w = size / 3.0
    objects: list[Obj] = []
    used_pairs: set[tuple[str, str]] = set()
    for g in groups:
        # distinct groups differ in (shape, colour), so that counts stay true
        while True:
            shape = rng.choices(SHAPES, cum_weights=_SHAPE_CUM)[0]
            colour = rng.choice(colours_ok)
            if (shape, colour) not in used_pairs:
                break
        used_pairs.add((shape, colour))
        size_cat = rng.choice(_SIZE_NAMES)
        orient = rng.choice(_LINE_ORIENT) if shape == "line" else ""
        style = "zigzag" if (shape == "line" and rng.random() < 0.25) else ""
        for k in g:
            row, col = cells[k]
            cx = (col + 0.5 + rng.uniform(-0.2, 0.2)) * cell_w
            cy = (row + 0.5 + rng.uniform(-0.2, 0.2)) * cell_w
            objects.append(Obj(shape=shape, colour=colour, size=size_cat, cell=(row, col), cx=cx, cy=cy, r=0.0,
                               orient=orient, style=style))

    # sizes: draw the radius; shrink the size category until the object fits beside the others
    for i, o in enumerate(objects):
        ci = _SIZE_NAMES.index(o.size)
        while True:
            lo, hi = SIZES[_SIZE_NAMES[ci]]
            r = rng.uniform(lo, hi) * size
            b = _bound(o.shape, r)
            cx = min(max(o.cx, b + 0.5), size - b - 0.5)
            cy = min(max(o.cy, b + 0.5), size - b - 0.5)
            ok = all(math.hypot(cx - p.cx, cy - p.cy) >= b + _bound(p.shape, p.r) + 1.5 for p in objects[:i])
            # clamping into the image must keep the centre inside its cell
            ok = ok and int(cx // cell_w) == o.cell[1] and int(cy // cell_w) == o.cell[0]
            if ok or ci == 0:
                break
            ci -= 1
        if not ok:  # does not happen with the grid jitter above; stay valid anyway
            return sample_scene(rng, size)
        o.size, o.r, o.cx, o.cy = _SIZE_NAMES[ci], r, cx, cy

    for o in objects:
        o.rgb = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in COLOURS[o.colour])
        if o.shape in ("triangle", "star", "blob"):
            o.angle = rng.uniform(0, 2 * math.pi)
        elif o.shape == "line":
            o.angle = 1.0 if rng.random() < 0.5 else -1.0
            o.extra = (rng.uniform(1.4, 2.4),)  # line width
        if o.shape == "blob":
            o.extra = tuple(rng.uniform(0.6, 1.0) for _ in range(rng.randint(7, 10)))

    relation = None
    if len(groups) == 2 and rng.random() < 0.6 and all(len(g) == 1 for g in groups):
        (ra, ca), (rb, cb) = objects[0].cell, objects[1].cell
        if ca == cb:
            relation = (0, "above", 1) if ra < rb else (0, "below", 1)
        elif ra == rb:
            relation = (0, "left of", 1) if ca < cb else (0, "right of", 1)

    return Scene(size=size, bg_kind=bg_kind, bg_colour=bg_name, bg_rgb=bg_rgb, bg_param=bg_param,
                 objects=objects, groups=groups, relation=relation, seed=rng.getrandbits(32))


# --------------------------------------------------------------------------------------------------------
# captions
# --------------------------------------------------------------------------------------------------------

def _article(word: str) -> str:
    return "an" if (word[:1] in "aeiou" or word.startswith("x ")) else "a"


def _pos_phrase(rng, cell) -> str:
    """'in the upper left', 'at the top', 'on the left side', 'in the centre of the image', ..."""
    name = rng.choice(_POS_NAMES[cell])
    if cell == (1, 1):
        prep = rng.choice(("in the", "in the", "at the"))
    elif cell in _CORNERS:
        prep = rng.choice(("in the", "at the", "on the"))
        if "-" in name or rng.random() < 0.25:
            name = name + " corner"
    elif cell in ((0, 1), (2, 1)):
        prep = rng.choice(("at the", "near the")) if name in ("top", "bottom") else "at the"
    else:
        prep = rng.choice(("on the", "at the"))
    name = name.replace("-", " ") if not name.endswith("corner") else name
    s = f"{prep} {name}"
    if rng.random() < 0.12:
        s += rng.choice((" of the image", " of the picture", " of the frame"))
    return s


def _bare_pos(rng, cell) -> str:
    return rng.choice(_POS_NAMES[cell]).replace("-", " ")


def _colour_word(rng, colour: str) -> str:
    return rng.choice(_COLOUR_WORDS.get(colour, (colour,)))


def _noun_kind(objs: list[Obj]) -> str:
    """Which nouns fit a group: its shape, but "zigzag" for zigzag lines and "small circle" for circles
    that are all small ("spot", "dot", "speck" only for small ones)."""
    o = objs[0]
    if o.shape == "line" and o.style == "zigzag":
        return "zigzag"
    if o.shape == "circle" and all(p.size == "small" for p in objs):
        return "small circle"
    return o.shape


def _noun_phrase(rng, scene: Scene, g: list[int], force_colour: bool = False) -> tuple[str, str]:
    """('a small red circle' | 'two red circles', singular noun used for back-references)."""
    objs = [scene.objects[i] for i in g]
    o = objs[0]
    kind = _noun_kind(objs)
    syn = _SYNONYMS.get(kind)
    if syn is not None and rng.random() < _SYNONYM_RATE:
        sing, plur = rng.choice(syn)
    else:
        sing, plur = rng.choice(_ZIGZAG_WORDS if kind == "zigzag" else _SHAPE_WORDS[o.shape])
    words = []
    same_size = all(p.size == o.size for p in objs)
    if same_size and rng.random() < 0.7:
        if o.shape == "line":
            words.append(rng.choice(_LINE_SIZE_WORDS[o.size]))
        elif sing not in _SMALL_NOUNS:
            words.append(rng.choice(_SIZE_WORDS[o.size]))
    if o.shape == "line" and o.orient and rng.random() < 0.6 and not o.style:
        words.append(o.orient)
    if force_colour or rng.random() < 0.9:
        words.append(_colour_word(rng, o.colour))
    if len(objs) == 1:
        words.append(sing)
        np_ = " ".join(words)
        return f"{_article(np_)} {np_}", sing
    words.append(plur)
    return f"{rng.choice(_COUNT_WORDS[len(objs)])} {' '.join(words)}", sing


def _list_join(items: list[str], rng) -> str:
    if len(items) == 1:
        return items[0]
    sep = ", and " if (len(items) > 2 and rng.random() < 0.3) else " and "
    return ", ".join(items[:-1]) + sep + items[-1]


def _group_location(rng, scene: Scene, g: list[int]) -> str:
    cells = [scene.objects[i].cell for i in g]
    if len(cells) == 1:
        return _pos_phrase(rng, cells[0])
    names = [_bare_pos(rng, c) for c in cells]
    v = rng.random()
    if v < 0.5:
        return "at the " + _list_join(names, rng)
    if v < 0.8:
        return ", " + _list_join([f"one {_pos_phrase(rng, c)}" for c in cells], rng)
    return "(" + ", ".join(names) + ")"


def _bg_phrase(rng, scene: Scene) -> str:
    k, name = scene.bg_kind, scene.bg_colour.replace("grey", rng.choice(("grey", "gray")))
    if k == "plain":
        return rng.choice((f"on a {name} background", f"on a plain {name} background",
                             f"against a {name} background", "on a plain background"))
    if k == "noise":
        return rng.choice(("on a noisy background", f"on a noisy {name} background",
                             f"on a grainy {name} background", "on a speckled background"))
    if k == "stripes":
        o = int(scene.bg_param[1])
        orient = ("horizontal", "vertical", "diagonal", "diagonal")[o]
        return rng.choice(("on a striped background", f"on a background of {orient} stripes",
                             f"on {orient} stripes"))
    if k == "gradient":
        return rng.choice(("on a gradient background", "on a shaded background",
                             f"on a {name} gradient background"))
    return rng.choice(("on a checkered background", "on a checkerboard background",
                         "on a chequered background", f"on a {name} checkerboard"))


_PREFIXES = ("", "", "", "", "", "an image of ", "a picture of ", "a drawing of ", "this shows ",
             "the image shows ")


def caption_scene(scene: Scene, rng: random.Random) -> str:
    """A true English caption of the scene, drawn from several templates."""
    parts: list[str] = []
    if scene.relation is not None:
        a, rel, b = scene.relation
        np_a, ref_a = _noun_phrase(rng, scene, [a])
        np_b, ref_b = _noun_phrase(rng, scene, [b])
        oa, ob = scene.objects[a], scene.objects[b]
        if ref_a == ref_b:  # same noun: disambiguate the back-reference by colour
            ref_a = f"{_colour_word(rng, oa.colour)} {ref_a}"
            ref_b = f"{_colour_word(rng, ob.colour)} {ref_b}"
            if ref_a == ref_b:  # same colour too (cannot happen: distinct groups differ in shape or colour)
                ref_a, ref_b = "first", "second"
        rel_w = {"above": "above", "below": "below", "left of": "to the left of",
                 "right of": "to the right of"}[rel]
        if rel in ("left of", "right of") and rng.random() < 0.3:
            rel_w = {"left of": "left of", "right of": "right of"}[rel]
        if rng.random() < 0.55:
            body = f"{np_a} {_pos_phrase(rng, oa.cell)} {rel_w} {np_b} {_pos_phrase(rng, ob.cell)}"
        else:
            body = (f"{np_a} {rel_w} {np_b}, with the {ref_a} {_pos_phrase(rng, oa.cell)} "
                    f"and the {ref_b} {_pos_phrase(rng, ob.cell)}")
        parts.append(body)
    else:
        order = list(range(len(scene.groups)))
        if rng.random() < 0.5:
            rng.shuffle(order)
        items = []
        single_group = len(scene.groups) == 1
        for gi in order:
            g = scene.groups[gi]
            np_, _ = _noun_phrase(rng, scene, g)
            loc = _group_location(rng, scene, g)
            if single_group and len(g) == 1 and rng.random() < 0.3:
                items.append(("front", np_, loc))
            else:
                items.append(("back", np_, loc))
        if len(items) == 1 and items[0][0] == "front":
            _, np_, loc = items[0]
            body = f"{loc} there is {np_}"
        else:
            body = _list_join([f"{np_}{loc}" if loc.startswith(",") else f"{np_} {loc}"
                               for _, np_, loc in items], rng)
        parts.append(body)

    body = parts[0]
    prefix = rng.choice(_PREFIXES) if not body.startswith(("in ", "at ", "on ", "near ")) else ""
    text = prefix + body
    if rng.random() < 0.35:
        bg = _bg_phrase(rng, scene)
        text = f"{bg}, {text}" if (not prefix and rng.random() < 0.25) else f"{text} {bg}"
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text += "."
    return text


# --------------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """A fixed bank of unit Gaussian noise; noisy backgrounds are crops of it (cheap and deterministic)."""
    n = max(256, 4 * size)
    return np.random.Generator(np.random.PCG64(20240601)).standard_normal((n, n), dtype=np.float32)


@lru_cache(maxsize=512)
def _pattern(size: int, kind: str, param: tuple[float, ...]) -> Image.Image:
    """Mixing weight (mode "L", 255 = second colour) between the two background colours."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "stripes":
        period, orient = param
        t = (y, x, x + y, x - y + size)[int(orient)]
        m = ((t / period) % 2.0 < 1.0) * 255.0
    elif kind == "gradient":
        m = (x, size - 1 - x, y, size - 1 - y)[int(param[0])] * (255.0 / (size - 1))
    else:  # checker
        c = param[0]
        m = (((x // c) + (y // c)) % 2) * 255.0
    return Image.fromarray(np.round(m).astype(np.uint8), "L")


def _render_background(scene: Scene) -> Image.Image:
    s = scene.size
    base = scene.bg_rgb[0]
    k = scene.bg_kind
    if k == "plain":
        return Image.new("RGB", (s, s), base)
    if k == "noise":
        bank = _noise_bank(s)
        span = bank.shape[0] - s + 1
        ox, oy = scene.seed % span, (scene.seed >> 12) % span
        n = bank[oy:oy + s, ox:ox + s]
        if (scene.seed >> 24) & 1:
            n = n.T
        arr = np.asarray(base, np.float32) + (n * scene.bg_param[0])[..., None]
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    return Image.composite(Image.new("RGB", (s, s), scene.bg_rgb[1]), Image.new("RGB", (s, s), base),
                           _pattern(s, k, scene.bg_param))


def _draw_object(draw: ImageDraw.ImageDraw, o: Obj, f: int, ox: float, oy: float) -> None:
    """Draw the object's coverage (255) at scale ``f``, with the origin moved to (ox, oy) (1x pixels)."""
    cx, cy, r = (o.cx - ox) * f, (o.cy - oy) * f, o.r * f
    if o.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif o.shape == "ring":
        w = max(1.6 * f, 0.4 * r)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=int(round(w)))
    elif o.shape == "square":
        h = 0.8 * r
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif o.shape == "triangle":
        pts = [(cx + r * math.cos(o.angle + k * 2 * math.pi / 3), cy + r * math.sin(o.angle + k * 2 * math.pi / 3))
               for k in range(3)]
        draw.polygon(pts, fill=255)
    elif o.shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else 0.45 * r
            a = o.angle + k * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        draw.polygon(pts, fill=255)
    elif o.shape == "cross":
        t = 0.3 * r
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=255)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=255)
    elif o.shape == "blob":
        k = len(o.extra)
        pts = [(cx + r * o.extra[i] * math.cos(o.angle + 2 * math.pi * i / k),
                cy + r * o.extra[i] * math.sin(o.angle + 2 * math.pi * i / k)) for i in range(k)]
        draw.polygon(pts, fill=255)
    elif o.shape == "line":
        w = o.extra[0] * f
        hl = r - w / 2  # the square line ends stay inside the extent
        if o.orient == "horizontal":
            dx, dy = hl, 0.0
        elif o.orient == "vertical":
            dx, dy = 0.0, hl
        else:
            dx, dy = hl / math.sqrt(2), o.angle * hl / math.sqrt(2)
        if o.style == "zigzag":  # 6 segments with alternating perpendicular offsets
            n, amp = 6, 0.22 * r
            nx, ny = (-dy, dx) if (dx or dy) else (0.0, 0.0)
            norm = math.hypot(nx, ny) or 1.0
            nx, ny = nx / norm * amp, ny / norm * amp
            pts = []
            for k in range(n + 1):
                t = -1.0 + 2.0 * k / n
                sgn = 0.0 if k in (0, n) else (1.0 if k % 2 else -1.0)
                pts.append((cx + t * dx + sgn * nx, cy + t * dy + sgn * ny))
            draw.line(pts, fill=255, width=max(1, int(round(w))), joint="curve")
        else:
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=max(1, int(round(w))))
    else:  # pragma: no cover
        raise ValueError(o.shape)


_SS = 2  # supersampling factor: objects are drawn at 2x and box-downsampled (anti-aliased edges)


def render_scene(scene: Scene, return_masks: bool = False):
    """Render to uint8 [size, size, 3]; with ``return_masks`` also each object's coverage (float 0..1)."""
    s = scene.size
    img = _render_background(scene)
    masks = []
    for o in scene.objects:
        b = _bound(o.shape, o.r) + 1.0
        x0, y0 = max(0, int(o.cx - b)), max(0, int(o.cy - b))
        x1, y1 = min(s, int(math.ceil(o.cx + b)) + 1), min(s, int(math.ceil(o.cy + b)) + 1)
        m = Image.new("L", ((x1 - x0) * _SS, (y1 - y0) * _SS), 0)
        _draw_object(ImageDraw.Draw(m), o, _SS, x0, y0)
        m = m.reduce(_SS)
        img.paste(o.rgb, (x0, y0, x1, y1), m)  # alpha blend of the solid colour through the coverage
        if return_masks:
            full = np.zeros((s, s), np.float32)
            full[y0:y1, x0:x1] = np.asarray(m, np.float32) / 255.0
            masks.append(full)
    out = np.asarray(img)
    return (out, masks) if return_masks else out


# --------------------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------------------

def generate_sample(rng, size: int = 64, with_meta: bool = False):
    """One sample: ``(PIL RGB image size x size, caption)``.

    ``rng``: a ``random.Random`` (see :func:`sample_rng`), a ``numpy.random.Generator`` or an int seed.
    With ``with_meta`` also the :class:`Scene` (``scene.meta['masks']``: each object's coverage mask)."""
    rng = as_rng(rng)
    scene = sample_scene(rng, size)
    scene.caption = caption_scene(scene, rng)
    if with_meta:
        arr, masks = render_scene(scene, return_masks=True)
        scene.meta["masks"] = masks
        return Image.fromarray(arr, "RGB"), scene.caption, scene
    return Image.fromarray(render_scene(scene), "RGB"), scene.caption


def generate_corpus(n: int, seed: int, size: int = 64, start: int = 0, with_meta: bool = False):
    """Samples ``start .. start+n-1`` of the corpus ``seed``: ``(uint8 [n, size, size, 3], captions)``
    (plus the list of scene dicts with ``with_meta``).  Sample ``i`` depends only on ``(seed, i)``."""
    images = np.empty((n, size, size, 3), np.uint8)
    captions: list[str] = []
    metas: list[dict] = []
    for j in range(n):
        rng = sample_rng(seed, start + j)
        scene = sample_scene(rng, size)
        scene.caption = caption_scene(scene, rng)
        images[j] = render_scene(scene)
        captions.append(scene.caption)
        if with_meta:
            metas.append(scene.to_dict())
    return (images, captions, metas) if with_meta else (images, captions)


def generate_captions(n: int, seed: int, size: int = 64, start: int = 0) -> list[str]:
    """The captions of :func:`generate_corpus` without rendering (identical strings, faster)."""
    out = []
    for j in range(n):
        rng = sample_rng(seed, start + j)
        out.append(caption_scene(sample_scene(rng, size), rng))
    return out

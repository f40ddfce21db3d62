#!/usr/bin/env python
"""Generate the generic pretraining corpus of ``beit3-mini`` and train its English tokenizer.

Corpus (``--out DIR``): ``images.npy`` (uint8 [n, size, size, 3], written in chunks through a memory map),
``captions.txt`` (one caption a line, line i = image i), ``info.json`` (seed, n, size, generator version,
sha256 of both files, generation time), and with ``--meta`` ``scenes.jsonl`` (the structured scene of every
sample: shapes, colours, sizes, cells, centres, background).  Sample i depends only on (seed, i), so
``--workers`` does not change the bytes.

Tokenizer (``--tokenizer-out``, default ``mwa_cli/models/mini/tokenizer.spm``): a sentencepiece unigram model
trained on a fixed set of corpus captions (samples 0..N-1 of seed 0, independent of ``--n``) plus a generic
English word list written below, single-threaded and unshuffled (deterministic).  It keeps the spm defaults
``<unk>``=0, ``<s>``=1, ``</s>``=2 (no pad), which the project's BEiT-3 tokenizer shifts by one exactly as for
the official ``beit3.spm``.  It covers English only: Japanese text encodes to ``<unk>``.

Regenerate everything shipped and used for pretraining:

    python scripts/make_mini_corpus.py --out out/mini_corpus --n 200000 --seed 0 --workers 2

Only the tokenizer:  ``python scripts/make_mini_corpus.py --tokenizer-only``.
Only a speed check:  ``python scripts/make_mini_corpus.py --bench``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mwa_cli.fileio import sha256_file  # noqa: E402
from scripts import mini_corpus as mc  # noqa: E402

DEFAULT_TOKENIZER = REPO / "mwa_cli" / "models" / "mini" / "tokenizer.spm"
TOKENIZER_SEED = 0
TOKENIZER_CAPTIONS = 30000
WORDLIST_REPEAT = 10

# ----------------------------------------------------------------------------------------------------------
# A generic English word list (about 2,100 distinct common words).  It makes the vocabulary a general English one
# rather than one fitted to the synthetic captions: function words, everyday nouns, verbs and adjectives,
# numbers, colours, shapes, positions, sizes, materials, and the words any general vocabulary has that
# inspection captions also use (scratch, crack, dent, rust, stain, hole, missing, part, misaligned, metal,
# panel, wood, fabric, board, surface, defect, edge, corner, ...).  Nothing here is taken from sample_data.
# ----------------------------------------------------------------------------------------------------------
WORDS = """
a an the this that these those there here some any all each every both either neither no not none nothing
one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion
first second third fourth fifth sixth seventh eighth ninth tenth last next previous half quarter double
single once twice many much more most less least few several enough other another same different such
i me my mine myself you your yours yourself he him his himself she her hers herself it its itself we us
our ours ourselves they them their theirs themselves who whom whose which what when where why how whether
and or but nor so yet for because although though while if unless until since than then also too very
quite rather almost nearly just only even still already always never often sometimes usually rarely
again ever soon later now today tomorrow yesterday tonight early late before after during within without
about above across against along among around at behind below beneath beside besides between beyond by
down from in inside into near of off on onto out outside over past per through throughout to toward
towards under underneath up upon with via like unlike opposite next around away back forward
is am are was were be been being have has had having do does did done doing will would shall should can
could may might must ought need needs needed get gets got getting make makes made making go goes went gone
going come comes came coming take takes took taken taking give gives gave given giving see sees saw seen
seeing look looks looked looking show shows showed shown showing find finds found finding know knows knew
known think thinks thought say says said tell tells told use uses used using work works worked working
call calls called try tries tried ask asks asked feel feels felt leave leaves left keep keeps kept let
put puts begin begins began begun seem seems seemed help helps helped turn turns turned start starts
started run runs ran running move moves moved moving live lives lived believe hold holds held bring
brings brought happen happens happened write writes wrote written provide provides sit sits sat stand
stands stood lose loses lost pay pays paid meet meets met include includes included continue set sets
learn learns learned change changes changed lead leads led understand understood watch watches follow
follows followed stop stops stopped create creates created speak speaks spoke read reads allow allows
add adds added spend spends spent grow grows grew grown open opens opened walk walks walked win wins won
offer offers remember remembers love loves consider considers appear appears appeared buy buys bought
wait waits serve serves die dies send sends sent expect expects build builds built stay stays fall falls
fell fallen cut cuts cutting reach reaches kill remain remains suggest raise raises pass passes sell
sells sold require requires report reports decide decides pull pulls pulled push pushed break breaks
broke broken fix fixes fixed repair repaired replace replaced check checks checked inspect inspected
inspection measure measured test tested clean cleaned paint painted cover covered hit drop dropped draw
draws drew drawn fill filled contain contains hang hung place placed point pointed lie lies lay rest
carry carried cross crossed touch touched press pressed bend bent twist twisted fold folded tear torn
burn burned melt melted cool cooled heat heated wash washed dry dried wet polish polished sand sanded
weld welded glue glued bolt bolted screw screwed nail nailed attach attached detach detached mount
mounted align aligned misaligned shift shifted slip slipped rotate rotated tilt tilted separate
separated connect connected join joined split peel peeled chip chipped scrape scraped rub rubbed
wear worn damage damaged mark marked spot spotted stain stained scratch scratched crack cracked dent
dented rust rusted rusty corrode corroded corrosion leak leaked leaking warp warped bulge bulged
time times year years day days week weeks month months hour hours minute minutes second seconds moment
morning afternoon evening night people person man men woman women child children boy girl friend family
group team company business market job world country city town village home house room door window
wall floor ceiling roof table chair desk bed kitchen office school class student teacher book page
paper letter word words name number line lines part parts piece pieces side sides end ends top bottom
front back middle center centre edge edges corner corners surface surfaces area areas region point
points place places way ways thing things kind kinds type types sort form forms shape shapes size sizes
color colour colors colours pattern patterns texture textures background foreground image images
picture pictures photo photos photograph drawing drawings view scene frame frames object objects item
items detail details example examples sample samples set sets pair pairs row rows column columns grid
level levels layer layers step steps stage result results problem problems question questions answer
answers idea reason case fact issue issues system systems process product products machine machines
tool tools part component components unit units device devices material materials quality control
production factory plant line worker workers engineer engineers operator customer order orders batch
stock store shop water air fire earth ground land sea river lake road street path bridge tree trees
leaf leaves flower flowers grass plant plants stone stones rock rocks sand dust dirt mud oil paint glass
metal metals steel iron copper aluminium aluminum brass tin zinc gold silver wood wooden timber plank
planks board boards panel panels plate plates sheet sheets plastic rubber leather cloth fabric fabrics
cotton wool silk thread fibre fiber textile concrete brick bricks tile tiles ceramic paper card
cardboard foam wire wires cable cables pipe pipes tube tubes rod rods bar bars beam beams frame bolt
bolts screw screws nut nuts nail nails pin pins rivet rivets hinge hinges spring springs gear gears
wheel wheels belt belts chain chains button buttons switch switches circuit circuits chip chips
component resistor capacitor connector connectors solder joint joints trace traces pad pads board
housing casing cover lid cap handle knob label labels seal seals gasket ring rings washer hole holes
gap gaps slot slots groove grooves ridge ridges bump bumps dent dents scratch scratches crack cracks
chip break tear tears cut cuts mark marks stain stains spot spots speck specks dot dots streak streaks
smear smudge blot blob blobs patch patches splash drip drops bubble bubbles blister blisters burr burrs
flaw flaws fault faults defect defects damage error errors deformation dent hollow bulge wrinkle
wrinkles fold folds crease creases fray frayed loose missing absent present visible invisible hidden
clear unclear clean dirty dusty oily greasy wet dry rough smooth flat bumpy uneven even level straight
curved bent crooked tilted skewed shifted rotated misaligned aligned centred centered offset broken
intact whole complete incomplete damaged faulty defective normal abnormal good bad fine poor acceptable
ok okay pass fail failed passed reject rejected accepted new old young modern ancient fresh used worn
red green blue yellow orange purple violet pink brown black white grey gray silver golden cyan magenta
beige tan maroon navy teal olive lime turquoise cream ivory dark light pale bright dull deep vivid
colourful colorful transparent opaque shiny glossy matte metallic reflective faded
circle circles round square squares rectangle rectangles rectangular triangle triangles triangular
line lines stroke strokes dot star stars cross crosses ring rings oval ovals ellipse disc disk discs
diamond diamonds hexagon pentagon polygon polygons arc arcs curve curves spiral wave waves zigzag
arrow arrows heart box boxes cube cubes sphere cone cylinder plus minus sign signs symbol symbols
outline outlines shape solid hollow filled empty striped stripes stripe checkered checkerboard
chequered dotted spotted speckled grainy noisy plain textured patterned gradient shaded blurry sharp
horizontal vertical diagonal parallel perpendicular upright sideways upside inside outside
left right upper lower up down high low higher lower top bottom middle central centre center side
sides near far close distant nearby adjacent beside next corner edge border margin rim boundary
north south east west northern southern eastern western
small smaller smallest large larger largest big bigger biggest little tiny huge giant medium mid sized
long longer longest short shorter shortest wide wider narrow narrower thick thicker thin thinner tall
deep shallow heavy light full empty high low great greater major minor slight slightly severe serious
strong weak hard soft loud quiet fast slow quick early late easy difficult simple complex important
possible impossible available free sure certain likely clear real true false right wrong correct
incorrect exact approximate whole entire general specific special particular common rare usual typical
main basic final total local public private national international natural human social political
economic financial legal medical technical personal physical mental nice happy sad angry afraid
beautiful pretty ugly hot cold warm cool safe dangerous rich poor cheap expensive busy ready able
own single double multiple various similar different separate several numerous
about approximately roughly exactly nearly around partly partially mostly fully completely entirely
slightly heavily lightly clearly barely hardly highly deeply widely closely directly well better best
worse worst also here there everywhere somewhere anywhere nowhere together apart alone
yes no please thanks thank hello goodbye sorry maybe perhaps probably certainly really actually
mr mrs ms dr
january february march april may june july august september october november december monday tuesday
wednesday thursday friday saturday sunday spring summer autumn fall winter
car cars bus train trains plane ship boat bike bicycle truck road engine motor fuel battery light lamp
lights phone computer screen keyboard camera lens sensor signal power energy electric electrical
electronic digital data file files program software hardware network internet email message
food bread rice meat fish fruit apple banana egg milk coffee tea sugar salt water drink dinner lunch
breakfast meal dog dogs cat cats bird birds horse animal animals cow sheep pig mouse insect
head face eye eyes ear ears nose mouth hand hands arm arms leg legs foot feet finger fingers body heart
blood skin hair bone health doctor hospital
money price cost costs value budget profit sale sales pay bill bank account plan plans goal policy
history story news art music game games sport sports film movie song picture theory science research
study method methods model models training test tests measure measurement measurements accuracy
recall precision score scores rate rates percent percentage average mean total sum count
account act action activity actor address age agency agent agreement amount analysis animal answer
apartment application approach argument army arrival article artist aspect attack attempt attention
attitude audience author authority baby bag ball band base basis basket bath battle beach bear beat
bell benefit bit blade block boat bottle bowl brain branch brand breath brother budget camp campaign
cancer candidate capital captain career category cause cell centre century chain chairman challenge
champion chance channel chapter character charge chart chest choice church circle citizen claim
climate club coast coat code collection college combination comment committee community comparison
competition concept concern condition conference conflict connection contact content context
contract contribution conversation copy corner council course court cover crew crime crisis crowd
culture cup currency curtain customer cycle dance danger date daughter deal death debate decade
decision degree demand department description design desire development difference dinner direction
director discussion disease distance distribution district doubt dream dress driver economy education
effect effort election element emergency employee enemy environment equipment estate evening event
evidence exam exchange exercise experience expert explanation expression extent failure farm father
fear feature fee field fight figure finance finger fish flight floor focus force forest fortune
foundation freedom function fund future garden gas gate generation gift glass glove goal government
grade guest guide gun habit hall heart height hero hill hole holiday horse host hotel husband image
impact income increase index industry influence information injury instance instrument insurance
interest interview island journey judge key king knowledge lab labour labor lady language law lawyer
leader lesson library limit link list loss luck manager manner map match material matter meaning
media member memory method middle mind minister mission mistake mixture mode moment mother motion
mountain movement museum nation nature neck network noise note notice object occasion option owner
pain painting parent park partner party passage patient peace period permission phase phrase
physics pilot pitch plan platform player pocket poem poet police pool population position pot
practice presence president pressure prince principle priority prison prize procedure profession
professor progress project property proposal protection purpose queen race radio range ratio
reality recipe record reflection relation relationship release religion request resource
response responsibility restaurant review risk role round rule safety salt scale schedule
scheme season seat secret section sector security selection sense sentence series service session
shadow share shelf shift shirt shoe shot shoulder silence singer sister site situation skill sky
sleep slice smile smoke snow society soil soldier solution son sound source space speaker speech
speed spirit square staff standard statement station status stomach strategy strength stress
structure style subject success suggestion suit sun supply support surprise survey swing tank task
taste tax technique technology telephone temperature tennis term text theme thanks thread ticket
title tone tongue tooth topic total touch tour tower track trade tradition traffic transport trip
trouble truth uncle union university user variety vehicle version victim video village visit voice
volume vote war warning weather wedding weight while wife wind wine wing winner wish wood worker
youth zone
accept achieve acquire admit adopt advise afford agree aim announce apply argue arrange arrive
assume attend avoid bake bear beg bind bite blow borrow breathe burst catch cause celebrate choose
claim climb collect combine compare compete complain complete concentrate confirm contribute cook
copy count cry dance deal defend define deliver deny depend describe deserve destroy determine
develop dig discover discuss divide drive earn eat educate emerge employ enable encourage enjoy
ensure enter escape establish estimate examine exist expand explain explore express extend face
fight fit fly forget forgive freeze gather hate hide hope hurt identify ignore imagine improve
increase indicate inform insist intend introduce invite involve jump kick kiss knock laugh launch
lend lift listen manage marry matter mention mix obtain occur operate organise organize own pack
perform pick plan play pour pray predict prefer prepare present prevent print produce promise
protect prove publish receive recognise recognize record reduce refer reflect refuse relate relax
release rely remove rent repeat reply represent rescue resist respond return reveal ride ring rise
rush save score search secure seek select settle shake share shine shoot shout sign sing sink
sleep slide smell smile solve sort sound spread steal stick strike struggle study succeed suffer
supply support suppose survive swim teach tend thank throw train travel treat trust visit vote
want warn waste wave wear wonder worry yield
able absolute accurate active actual additional afraid alive amazing angry annual anxious apparent
appropriate automatic average aware awful basic bitter blank blind bold brave brief brilliant broad
calm capable careful casual central cheap chemical chief civil classic clever close comfortable
commercial competitive complete confident conscious constant cool crazy creative critical crucial
cultural curious current cute daily dear decent definite delicate dense direct dirty distinct
domestic dramatic eager efficient elderly electric elegant empty environmental equal essential
eventual evident exact excellent existing extra extreme fair familiar famous fancy fantastic fat
federal female few final firm fit flexible foreign formal former frequent friendly front funny
gentle genuine global grand grateful guilty handsome healthy helpful historical holy honest horrible
hungry ideal ill immediate independent individual industrial initial innocent intense internal
jealous joint junior key kind known lazy legal lonely loose lucky mad male massive mere mild
military minimal mobile moral narrow native neat negative nervous neutral nice obvious odd official
original overall patient peaceful perfect permanent pleasant plenty polite popular positive
potential powerful practical precious pregnant primary prime principal prior professional proper
proud pure quick random rapid raw recent regular relevant reliable religious remote responsible
rough royal rural sacred scared secret secure senior sensitive silly sole spare square stable
steady steep sticky strange strict stupid sudden sufficient suitable super superb suspicious sweet
tall temporary terrible thick tight tiny tough tricky ugly ultimate unique unusual upset urban
useful useless valid valuable vast visual vital warm weird wild wise wonderful worried
"""


def word_list() -> list[str]:
    seen, out = set(), []
    for w in WORDS.split():
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def _chunk(args):
    start, n, seed, size, meta = args
    out = mc.generate_corpus(n, seed, size=size, start=start, with_meta=meta)
    return start, out


def write_corpus(out: Path, n: int, seed: int, size: int, workers: int, chunk: int, meta: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    images = np.lib.format.open_memmap(out / "images.npy.tmp", mode="w+", dtype=np.uint8,
                                       shape=(n, size, size, 3))
    captions: list[str | None] = [None] * n
    scenes: list[dict | None] = [None] * n if meta else []
    jobs = [(s, min(chunk, n - s), seed, size, meta) for s in range(0, n, chunk)]
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.imap_unordered(_chunk, jobs)
            for done, (start, res) in enumerate(results, 1):
                _store(images, captions, scenes, start, res, meta)
                _progress(done, len(jobs), t0)
    else:
        for done, job in enumerate(jobs, 1):
            start, res = _chunk(job)
            _store(images, captions, scenes, start, res, meta)
            _progress(done, len(jobs), t0)
    images.flush()
    del images
    os.replace(out / "images.npy.tmp", out / "images.npy")
    elapsed = time.perf_counter() - t0
    (out / "captions.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    if meta:
        with open(out / "scenes.jsonl", "w", encoding="utf-8") as f:
            for i, s in enumerate(scenes):
                f.write(json.dumps({"index": i, **s}) + "\n")
    info = {
        "n": n, "seed": seed, "size": size, "corpus_version": mc.CORPUS_VERSION,
        "generator": "scripts.mini_corpus.generate_corpus", "workers": workers,
        "generation_s": round(elapsed, 2), "images_per_s": round(n / elapsed, 1),
        "images_sha256": sha256_file(out / "images.npy"),
        "captions_sha256": sha256_file(out / "captions.txt"),
        "files": ["images.npy", "captions.txt"] + (["scenes.jsonl"] if meta else []),
    }
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _store(images, captions, scenes, start, res, meta):
    imgs, caps = res[0], res[1]
    images[start:start + len(caps)] = imgs
    captions[start:start + len(caps)] = caps
    if meta:
        scenes[start:start + len(caps)] = res[2]


def _progress(done: int, total: int, t0: float) -> None:
    if done == total or done % max(1, total // 20) == 0:
        print(f"  chunks {done}/{total}  {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)


def train_tokenizer(out_path: Path, vocab_size: int, n_captions: int = TOKENIZER_CAPTIONS) -> dict:
    import sentencepiece as spm

    captions = mc.generate_captions(n_captions, TOKENIZER_SEED)
    words = word_list()

    def sentences():
        yield from captions
        for _ in range(WORDLIST_REPEAT):
            for w in words:
                yield w
                yield w.capitalize()

    # sentence_iterator + model_writer: no file paths end up in the model's trainer spec (byte-stable output)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences(), model_writer=buf, model_type="unigram", vocab_size=vocab_size,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        input_sentence_size=0, shuffle_input_sentence=False, num_threads=1, seed_sentencepiece_size=1000000,
        hard_vocab_limit=False, minloglevel=2,
    )
    data = buf.getvalue()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    sp = spm.SentencePieceProcessor(model_file=str(out_path))
    ja = "左上に長い傷がある金属板"
    ja_ids = sp.encode(ja)
    return {"path": str(out_path), "vocab_size": sp.get_piece_size(), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "captions": n_captions, "words": len(words),
            "example": sp.encode("a long scratch on the upper left of a steel plate", out_type=str),
            "japanese_ids": ja_ids}


def bench(n: int, size: int) -> float:
    mc.generate_corpus(200, 123, size=size)  # warm caches
    t0 = time.perf_counter()
    mc.generate_corpus(n, 0, size=size)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Regenerate: python scripts/make_mini_corpus.py --out out/mini_corpus "
                                       "--n 200000 --seed 0 --workers 2")
    p.add_argument("--out", type=Path, help="corpus folder (images.npy, captions.txt, info.json)")
    p.add_argument("--n", type=int, default=200000, help="number of image-caption pairs (default 200000)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--workers", type=int, default=1, help="processes (output is identical for any value)")
    p.add_argument("--chunk", type=int, default=5000, help="samples per work unit")
    p.add_argument("--meta", action="store_true", help="also write scenes.jsonl (structured scene per sample)")
    p.add_argument("--tokenizer-out", type=Path, default=DEFAULT_TOKENIZER,
                   help=f"sentencepiece model to write (default {DEFAULT_TOKENIZER.relative_to(REPO)})")
    p.add_argument("--vocab-size", type=int, default=4000, help="target vocabulary size (soft limit)")
    p.add_argument("--no-tokenizer", action="store_true", help="do not (re)train the tokenizer")
    p.add_argument("--tokenizer-only", action="store_true", help="only train the tokenizer")
    p.add_argument("--bench", action="store_true", help="only measure generation speed (one process)")
    a = p.parse_args(argv)

    if a.bench:
        n = min(a.n, 20000)
        print(json.dumps({"images_per_s": round(bench(n, a.size), 1), "n": n, "size": a.size}))
        return 0
    if not a.tokenizer_only:
        if a.out is None:
            p.error("--out is required (or use --tokenizer-only / --bench)")
        info = write_corpus(a.out, a.n, a.seed, a.size, a.workers, a.chunk, a.meta)
        print(json.dumps(info, indent=2))
    if not a.no_tokenizer:
        tok = train_tokenizer(a.tokenizer_out, a.vocab_size)
        print(json.dumps(tok, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

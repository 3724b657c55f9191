"""The story of a run, as one offline HTML page to hand to someone who will not open the app: the model and
its exactness, a few classes' prototypes with the training photos they fire on, the held-out mistakes one
switch fixes (the paper's Figure 9, found rather than hunted for), the prototypes that do more harm than good
and the held-out effect of switching them off. Pictures are PNG data URIs and there is no script: the page
makes no request. Every text that comes from data (class names, labels, file names) is escaped."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from ..backbones import Backbone
from ..charts import percent
from ..data import DataError, available_splits
from ..data.features import CacheDir, Progress, extract_features, split_features
from ..evaluation.mistakes import mistakes_json, run_class_space
from ..explain import heatmap_overlay, model_input, upsample
from ..files import atomic_path
from ..method.head import PrototypeHead
from ..runs import Run
from . import markup
from .pictures import png

CLASSES_SHOWN = 3  # classes whose prototypes get a gallery
PHOTOS_PER_PROTOTYPE = 3  # training photos per prototype, those it contributes most to
MISTAKES_SHOWN = 6  # fixed mistakes drawn as cards, the clearest first


@dataclass
class Story:
    """What the page shows: the figures (JSON-able) and the pictures (name -> base64 PNG)."""

    run: dict
    exactness: dict
    mistakes: dict  # ``mistakes_json``: the model's label space, and ``run_classes`` where only some are decomposed
    galleries: list[dict] = field(default_factory=list)
    cards: list[dict] = field(default_factory=list)
    shown_space: str = ""  # which label space the cards come from
    images: dict[str, str] = field(default_factory=dict)


def prototype_title(run: Run, position: int, i: int) -> str:
    """``P2 “beak”`` or ``P2``: a prototype as the pages name it (not escaped)."""
    name = run.prototype_name_grid()[position][i]
    return f"P{i + 1}" + (f" “{name}”" if name else "")


def culprit_overlays(
    backbone: Backbone, head: PrototypeHead, paths: list[str], switched: list[list[tuple[int, int]]], cache_dir: CacheDir = None
) -> list[tuple]:
    """Per photo: the photo as the model sees it and each switched prototype's heatmap over it (uint8 RGB)."""
    if not paths:  # no mistake is fixed by one switch: nothing to draw (extracting no image is an error)
        return []
    feats = extract_features(backbone, [Path(p) for p in paths], cache_dir=cache_dir).feats
    out = []
    for n, (path, pairs) in enumerate(zip(paths, switched)):
        shown = model_input(backbone, path)[1]
        maps = [head.heatmaps(feats[n : n + 1], head.position(label))[0, i] for label, i in pairs]
        out.append((shown, [heatmap_overlay(upsample(m, shown.shape[:2]), shown) for m in maps]))
    return out


def _galleries(
    run: Run, backbone: Backbone, head: PrototypeHead, positions: list[int], images: dict, cache_dir: CacheDir
) -> list[dict]:
    """Per class shown: each prototype's heatmaps on the training photos it contributes most to."""
    galleries = []
    for position in positions:
        folder = run.manifest["classes"][position]["folder"]
        paths = [p for p in run.manifest["images"].get(folder, []) if Path(p).is_file()]
        if not paths:
            continue
        feats = extract_features(backbone, [Path(p) for p in paths], cache_dir=cache_dir).feats
        maps = head.heatmaps(feats, position)  # (n, k, h, w)
        contribution = maps.mean(dim=(2, 3))  # (n, k): each prototype's contribution on each photo
        logit = contribution.sum(1, keepdim=True) + head.bias[head.classes[position]]
        prototypes = []
        for i in range(run.k):
            photos = []
            for n in contribution[:, i].argsort(descending=True)[:PHOTOS_PER_PROTOTYPE].tolist():
                key = f"g{position}.{i}.{n}"
                shown = model_input(backbone, paths[n])[1]
                images[key] = png(heatmap_overlay(upsample(maps[n, i], shown.shape[:2]), shown))
                photos.append({"key": key, "file": Path(paths[n]).name, "contribution": float(contribution[n, i])})
            share = float((contribution[:, i] / logit[:, 0].abs().clamp_min(1e-6)).mean())
            prototypes.append(
                {
                    "title": prototype_title(run, position, i),
                    "photos": photos,
                    "mean_contribution": float(contribution[:, i].mean()),
                    "mean_share": share,
                }
            )
        galleries.append({"class": run.class_names[position], "n_photos": len(paths), "prototypes": prototypes})
    return galleries


def story_figures(
    run: Run,
    backbone: Backbone,
    data: str | Path,
    split: str = "val",
    cache_dir: CacheDir = None,
    progress: Progress | None = None,
    pictures: bool = True,
) -> Story:
    """The story's figures on the held-out photos of the run's classes in ``data/split`` (and, with
    ``pictures``, its galleries and mistake cards: a backbone pass on a few dozen photos)."""
    run.check_backbone(backbone)
    if split not in available_splits(data):
        raise DataError(
            f"{Path(data) / split} does not exist: the mistakes are found on held-out photos "
            f"in DIR/{split}/<class folder>/ (or DIR/<class folder>/, held out by file name)"
        )
    folders = [c["folder"] for c in run.manifest["classes"]]
    sf = split_features(backbone, data, split, classes=folders, cache_dir=cache_dir, progress=progress)
    if not len(sf.labels):
        raise DataError(f"{Path(data) / split} has no photos of the run's classes")
    head = run.head(backbone)
    logits = head.logits(sf.pooled, head.contributions(sf.pooled))
    exactness = {
        "max_abs_logit_diff": float((logits - sf.logits).abs().max()),
        "top1_original": float((sf.logits.argmax(1) == sf.labels).float().mean()),
        "top1_prototype": float((logits.argmax(1) == sf.labels).float().mean()),
        "photos": len(sf.labels),
    }
    figures = mistakes_json(head, sf.pooled, sf.labels, sf.paths, backbone.class_names, run.class_names)
    info = {
        "backbone": run.manifest["backbone"],
        "k": run.k,
        "classes": run.class_names,
        "strategy": run.strategy,
        "n_model_classes": int(head.weight.shape[0]),
        "data": str(Path(data).resolve()),
        "split": split,
        "name": run.path.name if run.path else "run",
    }
    story = Story(info, exactness, figures)
    if not pictures:
        return story
    space, shown_head, names = figures, head, backbone.class_names
    if not figures["fixed_by_one"] and "run_classes" in figures:  # every mistake goes to a class without prototypes
        space, names = figures["run_classes"], run.class_names
        shown_head = run_class_space(head, sf.pooled, sf.labels, sf.paths)[0]
        story.shown_space = "run_classes"
    fixed = [c for c in space["culprits"] if c["reason"] == "one"][:MISTAKES_SHOWN]
    label_of = {name: n for n, name in enumerate(names)}
    switched = [[(label_of[s["class"]], s["prototype"]) for s in c["switched"]] for c in fixed]
    for n, (c, (shown, overlays)) in enumerate(
        zip(fixed, culprit_overlays(backbone, shown_head, [c["file"] for c in fixed], switched, cache_dir))
    ):
        story.images[f"m{n}.photo"], story.images[f"m{n}.culprit"] = png(shown), png(overlays[0])
        position = run.class_names.index(c["switched"][0]["class"])
        story.cards.append({**c, "key": f"m{n}", "title": prototype_title(run, position, c["switched"][0]["prototype"])})
    culprit_classes = [run.class_names.index(c["switched"][0]["class"]) for c in fixed]
    order = list(dict.fromkeys(culprit_classes + list(range(len(run.classes)))))[:CLASSES_SHOWN]
    story.galleries = _galleries(run, backbone, head, order, story.images, cache_dir)
    return story


# -- the page --------------------------------------------------------------------------------------
def _top(rows: list) -> str:
    return "<br>".join(f"{html.escape(name)} {value:+.2f}" for name, value in rows)


def render_story(story: Story) -> str:
    """The whole page as a string: no script, no external resource."""
    r, e, m = story.run, story.exactness, story.mistakes
    sections = []
    sections.append(
        (
            "model",
            "The model and its exactness",
            (
                f"<p class='lead'>{html.escape(r['backbone'])}: its last layer rewritten as {r['k']} part prototypes for each of "
                f"{len(r['classes'])} classes ({html.escape(', '.join(r['classes']))}); the model has {r['n_model_classes']} "
                "classes, and those not decomposed keep their own rows. Every logit is a sum of prototype contributions, "
                "equal to the model's own logit to float precision.</p>"
                + markup.cards(
                    [
                        ("max |logit difference|", f"{e['max_abs_logit_diff']:.1e}", f"on {e['photos']} held-out photos"),
                        ("top-1, original model", percent(e["top1_original"]), ""),
                        ("top-1, prototype network", percent(e["top1_prototype"]), "the same by construction"),
                    ]
                )
            ),
        )
    )
    blocks = []
    for g in story.galleries:
        rows = "".join(
            f"<tr><td class='text'><b>{html.escape(p['title'])}</b><br>mean contribution {p['mean_contribution']:+.2f}"
            f"<br>mean share {percent(p['mean_share'])}</td>"
            + "".join(
                f"<td>{markup.img(story.images, ph['key'], ph['file'])}<br>{ph['contribution']:+.2f}</td>" for ph in p["photos"]
            )
            + "</tr>"
            for p in g["prototypes"]
        )
        blocks.append(f"<h3>{html.escape(g['class'])}</h3><table class='gallery'>{rows}</table>")
    sections.append(
        (
            "prototypes",
            "What the prototypes look at",
            (
                f"<p class='lead'>For {len(story.galleries)} classes, each prototype's heatmap on the training photos it "
                f"contributes most to; the number under a photo is the prototype's contribution to the class's logit there, "
                "and the share is its part of the logit over the class's training photos.</p>" + "".join(blocks)
            ),
        )
    )
    where = (
        ""
        if story.shown_space != "run_classes"
        else f"<p class='muted'>In the model's {r['n_model_classes']}-way label space, every one of its {m['mistakes']} "
        f"mistakes ranks a class above the true one that was not decomposed ({m['not_decomposed']}), which no "
        "prototype switch can lower. The cards read the run as a classifier of its own classes, as the paper does "
        "(it decomposes every class).</p>"
    )
    cards = "".join(
        f"<div class='mcard'><div>{markup.img(story.images, c['key'] + '.photo', c['file'])}"
        f"{markup.img(story.images, c['key'] + '.culprit', 'culprit heatmap')}</div>"
        f"<p><b>{html.escape(c['true'])}</b> taken for <b>{html.escape(c['predicted'])}</b>; switch off "
        f"<b>{html.escape(c['switched'][0]['class'])} · {html.escape(c['title'])}</b> and it is right "
        f"(lead {c['margin']:+.2f})<br><span class='muted'>{html.escape(Path(c['file']).name)}</span></p>"
        f"<table><tr><th>before</th><th>after</th></tr><tr><td class='text'>{_top(c['top_before'])}</td>"
        f"<td class='text'>{_top(c['top_after'])}</td></tr></table></div>"
        for c in story.cards
    )
    mistake_rows = [
        [
            label,
            v["mistakes"],
            v["fixed_by_one"],
            v["fixed_by_two"],
            v["not_decomposed"],
            v["not_fixed_by_two"],
            percent(v["oracle_paper"]["top1_before"]),
            percent(v["oracle_paper"]["top1_after"]),
            percent(v["oracle_smallest"]["top1_after"]),
        ]
        for label, v in (
            (m["label_space"], m),
            *(((m["run_classes"]["label_space"], m["run_classes"]),) if "run_classes" in m else ()),
        )
    ]
    sections.append(
        (
            "mistakes",
            "Mistakes one switch fixes",
            (
                "<p class='lead'>For every held-out photo the model gets wrong, the smallest edit that puts the true class on "
                "top: one prototype switched off (of a class ranked above the true one), else two. The oracle of the paper's "
                "Table 4 switches off the predicted class's largest prototype in every mistake; the smallest-culprit rule "
                "uses the one or two switches found here.</p>"
                + where
                + markup.table(
                    [
                        "label space",
                        "mistakes",
                        "fixed by one",
                        "by two",
                        "competitor not decomposed",
                        "needs more",
                        "top-1",
                        "oracle (paper)",
                        "oracle (smallest culprit)",
                    ],
                    [[html.escape(str(x[0])), *x[1:]] for x in mistake_rows],
                    text=(0,),
                )
                + (f"<div class='mcards'>{cards}</div>" if cards else "<p class='muted'>No mistake is fixed by one switch.</p>")
            ),
        )
    )
    harm, edit = m["harmful"][:10], m["harmful_edit"]  # the model as it would be shipped: its own label space
    switched = ", ".join(f"{s['class']} P{s['prototype'] + 1}" for s in edit["switched_off"]) or "none"
    edits = [
        [
            html.escape(v["label_space"]),
            html.escape(", ".join(f"{s['class']} P{s['prototype'] + 1}" for s in v["harmful_edit"]["switched_off"]) or "none"),
            f"{percent(v['harmful_edit']['chosen_on']['top1_before'])} → {percent(v['harmful_edit']['chosen_on']['top1_after'])}",
            f"{percent(v['harmful_edit']['top1_before'])} → {percent(v['harmful_edit']['top1_after'])}",
        ]
        for v in (m, *((m["run_classes"],) if "run_classes" in m else ()))
    ]
    sections.append(
        (
            "harmful",
            "Prototypes that do more harm than good",
            (
                f"<p class='lead'>Each prototype switched off alone, over the {m['photos']} held-out photos "
                f"({html.escape(m['label_space'])}): the predictions it fixes and breaks. A global edit is chosen from "
                f"this on half 0 of the photos ({edit['chosen_on']['photos']}) and scored on half 1 "
                f"({edit['scored_on']['photos']}), which played no part in choosing it.</p>"
                + markup.table(
                    ["class", "prototype", "fixed", "broken", "net"],
                    [[html.escape(h["class"]), f"P{h['prototype'] + 1}", h["fixed"], h["broken"], h["net"]] for h in harm],
                    text=(0, 1),
                )
                + markup.cards(
                    [
                        ("switched off", str(len(edit["switched_off"])), switched),
                        (
                            "chosen on half 0",
                            f"{percent(edit['chosen_on']['top1_before'])} → {percent(edit['chosen_on']['top1_after'])}",
                            "in-sample: where it was chosen",
                        ),
                        ("scored on half 1", f"{percent(edit['top1_before'])} → {percent(edit['top1_after'])}", "held out"),
                    ]
                )
                + markup.table(
                    ["label space", "switched off", "top-1 on half 0 (chose it)", "top-1 on half 1 (held out)"], edits, text=(0, 1)
                )
                + f"<p class='muted'>{html.escape(edit['rule'])}</p>"
            ),
        )
    )
    nav = "".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{html.escape(title)}</h2>{text}</section>' for key, title, text in sections)
    style = markup.CSS + (
        ".mcards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}"
        ".mcard{border:1px solid #e2e6ea;border-radius:8px;padding:10px}.mcard img{width:136px;height:136px;"
        "margin-right:6px;border-radius:4px}.gallery img{width:112px;height:112px}"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>protoscope story: {html.escape(r['name'])}</title><style>{style}</style></head><body><main>"
        f"<h1>{html.escape(r['backbone'])} as part prototypes</h1><p class='muted'>run {html.escape(r['name'])} · "
        f"held-out photos from {html.escape(r['data'])}/{html.escape(r['split'])}</p><nav>{nav}</nav>{body}"
        "</main></body></html>"
    )


def write_story(story: Story, target: str | Path) -> Path:
    """Render first, then write atomically: a failure writes nothing."""
    page = render_story(story)
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target

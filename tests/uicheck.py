"""Checks over a drawn Kivy widget tree: what an operator would see wrong on the screen.

Each check takes the root (normally ``kivy.core.window.Window``, so that
popups, drop-downs and banners attached to the window are included, or any
widget) after the frame has been laid out and drawn, and returns a list of
problems: plain strings, each naming the widget by its path (the attribute
names the panel keeps it under, e.g. ``Panel.keypad.keys['5']``) and its text.
An empty list is a pass. No pytest in here: tests/test_ui_screens.py turns the
lists into failures, and a script can print them. ``Tree(Window)`` walks the
tree once; every check takes a Tree or a root. ``screenshot(path)`` draws the
window at its current size (also under SDL's offscreen driver after
``Window.size`` changed) and returns a ``Picture`` that ``blank`` reads.

- ``blank(png_or_pixels)``: the screenshot is (nearly) one colour.
- ``overflow(root)``: a visible text does not fit its widget: its texture is
  larger than the widget (1 px tolerance), or part of the text is not drawn
  (lines dropped by a fixed height, ``max_lines``, or ``shorten``), or a word
  is broken (wrapped or shortened in the middle), or the text is cut by the
  edge of the window or of a ScrollView it is in. Shortening at word ends
  (``shorten=True, split_str=" "``, whole words around the ellipsis) is
  allowed: "wrap or abbreviate at word ends".
- ``overlaps(root)``: two visible siblings overlap, or a visible widget sticks
  out of its parent (or the window). Children of overlay containers
  (FloatLayout, RelativeLayout, AnchorLayout - ModalView/Popup included -,
  Scatter, ScreenManager, PageLayout and the Window itself) may overlap each
  other on purpose (the banner and popups sit above everything): only their
  insides are checked. Children of a ScrollView are clipped by it and may
  extend past it.
- ``contrast(root)``: a visible text's colour on its background is under
  ``kiosk.ui.theme.MIN_CONTRAST`` (``kiosk.ui.theme.contrast``, alpha blended).
- ``targets(root, min_dp=48)``: a visible touch target (any ButtonBehavior:
  Button, ToggleButton, ...; or a widget of the project's own whose class
  handles touches itself, such as a call row, unless it holds buttons of its
  own) is under ``min_dp`` dp in either dimension; the part a finger can hit
  is measured (what a ScrollView has not scrolled out of view).

**The background rule** (``contrast``): the background of a text is what has
been painted under the centre of its widget before its text: the tree is
walked in Kivy's drawing order (canvas.before, canvas, children last-added
last, canvas.after) and every Rectangle, RoundedRectangle or BorderImage whose
rectangle covers that point is composited, with the Color in force times the
centre texel of its texture (so Kivy's image-backed Buttons and Popups, and
the flat ``background_normal=""`` buttons, count as drawn) and times the
widgets' opacity, over ``Window.clearcolor``. A widget exposing ``bg_rgba``
(not None) declares its own paint: that colour is used instead of its own
shapes (for backgrounds painted in ways this walk cannot read). Other texts'
textures are never a background. A text is checked with its colour
(``disabled_color`` when disabled) and with every ``[color=...]`` of its
markup that colours visible characters.

**Visible** (every check): the widget and its ancestors have opacity > 0, it
has a size, it is at least partly inside the window and inside any
ScrollView/StencilView that clips it, and its centre is not covered by a shape
drawn after it by another widget (not its ancestor or descendant) with alpha
>= 0.5 - e.g. the table under an open popup's overlay, or a row under the
incoming-call banner; overlaps() uses the first three only.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from kiosk.ui import theme

RGBA = tuple[float, float, float, float]
Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 in window coordinates

#: Pixel tolerance of size comparisons (rounding of layouts and textures).
TOLERANCE = 1.0
#: Alpha from which a shape drawn later hides what is under it.
OCCLUDING_ALPHA = 0.5

# ---------------------------------------------------------------- screenshots


class Picture:
    """A drawn frame: RGBA bytes, rows bottom-up as GL reads them, `width` x `height`."""

    def __init__(self, data: bytes, width: int, height: int) -> None:
        self.data, self.width, self.height = data, width, height

    def save(self, path: str | Path) -> str:
        """Write it as an RGB PNG (zlib level 1: a test writes many of them)."""
        import numpy as np

        w, h = self.width, self.height
        rows = np.frombuffer(self.data, dtype=np.uint8).reshape(h, w, 4)[::-1, :, :3].reshape(h, w * 3)
        raw = np.hstack([np.zeros((h, 1), dtype=np.uint8), rows]).tobytes()  # filter type 0 on every row

        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
               + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))
        Path(path).write_bytes(png)
        return str(path)


def screenshot(path: str | Path | None = None, root: Any = None) -> Picture:
    """Draw the window (all its children, popups included) at its current size; saved as a PNG at `path` if given.

    Kivy's own Window.screenshot() reads the GL surface, which under SDL's
    offscreen driver keeps the size the window was created with; this renders
    the same canvases into an Fbo of the window's current size instead, so a
    test can set ``Window.size`` to any resolution in one process.
    """
    from kivy.core.window import Window
    from kivy.graphics import ClearBuffers, ClearColor, Fbo

    root = Window if root is None else root
    width, height = (int(v) for v in root.size)
    fbo = Fbo(size=(width, height), with_stencilbuffer=True)
    with fbo:
        ClearColor(*Window.clearcolor)
        ClearBuffers()
    kids = list(reversed(root.children))  # drawing order
    canvas = root.canvas
    # Where each child's canvas sits in the window's, all read before any is moved; put back in ascending order.
    moved = sorted((canvas.indexof(kid.canvas), i, kid) for i, kid in enumerate(kids))
    moved = [(index, i, kid) for index, i, kid in moved if index > -1]
    for _index, _i, kid in moved:
        canvas.remove(kid.canvas)
    for kid in kids:
        fbo.add(kid.canvas)
    try:
        fbo.draw()
        picture = Picture(bytes(fbo.pixels), width, height)
    finally:
        for kid in kids:
            fbo.remove(kid.canvas)
        for index, _i, kid in moved:
            canvas.insert(index, kid.canvas)
    if path is not None:
        picture.save(path)
    return picture


def _load_pixels(png_or_pixels: Any) -> tuple[bytes, int, int]:
    """(RGBA bytes, width, height) of a Picture, a PNG path, (bytes, (w, h)) / (bytes, w, h), or a texture."""
    if isinstance(png_or_pixels, Picture):
        return png_or_pixels.data, png_or_pixels.width, png_or_pixels.height
    if isinstance(png_or_pixels, (str, Path)):
        from kivy.core.image import Image as CoreImage

        image = CoreImage(str(png_or_pixels), keep_data=True, nocache=True)
        texture = image.texture
        return bytes(texture.pixels), int(texture.width), int(texture.height)
    if isinstance(png_or_pixels, tuple):
        if len(png_or_pixels) == 2:
            data, (w, h) = png_or_pixels
        else:
            data, w, h = png_or_pixels
        return bytes(data), int(w), int(h)
    texture = getattr(png_or_pixels, "texture", png_or_pixels)
    return bytes(texture.pixels), int(texture.width), int(texture.height)


def blank(png_or_pixels: Any, *, dominant: float = 0.98, min_colours: int = 4) -> list[str]:
    """The screenshot is (nearly) one colour: one colour covers `dominant` of it, or it has under
    `min_colours` colours (each channel quantised to 16 levels)."""
    import numpy as np

    data, w, h = _load_pixels(png_or_pixels)
    count = w * h
    channels = 4 if count and len(data) >= count * 4 else 3
    if count == 0 or len(data) < count * channels:
        return [f"blank: the picture has no pixels ({w}x{h}, {len(data)} bytes)"]
    pixels = np.frombuffer(data, dtype=np.uint8)[:count * channels].reshape(count, channels)[:, :3] >> 4
    keys = (pixels[:, 0].astype(np.int32) << 8) | (pixels[:, 1].astype(np.int32) << 4) | pixels[:, 2]
    values, counts = np.unique(keys, return_counts=True)
    top = int(values[counts.argmax()])
    share = float(counts.max()) / count
    if share >= dominant or len(values) < min_colours:
        rgb = "#" + "".join(f"{((top >> shift) & 15) * 17:02x}" for shift in (8, 4, 0))
        return [f"blank: {share:.1%} of the picture is {rgb}, {len(values)} colours in all"]
    return []


# ---------------------------------------------------------------- the tree


def _is(widget: Any, *names: str) -> bool:
    return any(cls.__name__ in names for cls in type(widget).__mro__)


def _children(node: Any) -> list[Any]:
    return list(getattr(node, "children", []) or [])


def _is_window(node: Any) -> bool:
    return _is(node, "WindowBase")


def _rect(widget: Any) -> Rect:
    """The widget's rectangle in window coordinates."""
    if _is_window(widget):
        return (0.0, 0.0, float(widget.width), float(widget.height))
    x0, y0 = widget.to_window(widget.x, widget.y)
    x1, y1 = widget.to_window(widget.right, widget.top)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _intersect(a: Rect, b: Rect) -> Rect | None:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _contains(outer: Rect, point: tuple[float, float]) -> bool:
    return outer[0] <= point[0] <= outer[2] and outer[1] <= point[1] <= outer[3]


def _centre(r: Rect) -> tuple[float, float]:
    return ((r[0] + r[2]) / 2, (r[1] + r[3]) / 2)


def _size(r: Rect) -> str:
    return f"{r[2] - r[0]:.0f}x{r[3] - r[1]:.0f}"


@dataclass
class Node:
    widget: Any
    parent: "Node | None"
    path: str
    rect: Rect
    clip: Rect  # what of the window this widget may show in (window ∩ clipping ancestors)
    opacity: float  # own opacity times every ancestor's
    #: Index range of this widget's paint in the drawing-order list: [start, end).
    paint_start: int = 0
    paint_end: int = 0
    text_index: int | None = None  # the paint index of a Label's own text rectangle
    kids: list["Node"] = field(default_factory=list)

    @property
    def shown(self) -> bool:
        """Opacity > 0, a size, and at least partly inside the window and its clip."""
        r = self.rect
        return self.opacity > 0 and r[2] - r[0] > 0 and r[3] - r[1] > 0 and _intersect(r, self.clip) is not None


@dataclass
class Paint:
    owner: Node
    rect: Rect
    rgba: RGBA
    texture_of_text: bool = False  # a Label's text texture: never a background


class Tree:
    """The widget tree under `root` with paths, window rectangles and every shape in drawing order."""

    def __init__(self, root: Any) -> None:
        from kivy.core.window import Window

        self.root = root
        self.window = Window
        self.nodes: list[Node] = []
        self.paints: list[Paint] = []
        self._names: dict[int, tuple[Any, str]] = {}
        self._texel_cache: dict[tuple[int, tuple[float, ...]], RGBA] = {}
        self.text_textures: set[int] = set()
        wrect = (0.0, 0.0, float(Window.width), float(Window.height))
        top = Node(root, None, "Window" if _is_window(root) else type(root).__name__, _rect(root), wrect,
                   float(getattr(root, "opacity", 1.0)))
        self.top = top
        self._build(top)
        for node in self.nodes:
            texture = getattr(node.widget, "texture", None) if _is(node.widget, "Label") else None
            if texture is not None:
                self.text_textures.add(id(texture))
        self._colour: RGBA = (1.0, 1.0, 1.0, 1.0)
        self._painted: set[int] = set()
        self._masking = False
        self._paint_node(top)

    # --- structure and names

    def _build(self, node: Node) -> None:
        self.nodes.append(node)
        kids = list(reversed(_children(node.widget)))  # drawing order: the last added is drawn last
        clip = node.clip
        if _is(node.widget, "StencilView") and not _is_window(node.widget):
            clip = _intersect(clip, node.rect) or (0.0, 0.0, 0.0, 0.0)
        for i, kid in enumerate(kids):
            child = Node(kid, node, self._path(kid, node, i), _rect(kid), clip,
                         node.opacity * float(getattr(kid, "opacity", 1.0)))
            node.kids.append(child)
            self._build(child)

    def _path(self, widget: Any, parent: Node, index: int) -> str:
        """Named by the nearest ancestor that keeps it as an attribute (or in a dict/list attribute)."""
        owner: Node | None = parent
        while owner is not None:
            name = _attribute_of(owner.widget, widget)
            if name is not None:
                return f"{owner.path}.{name}"
            owner = owner.parent
        name = type(widget).__name__
        if _is_window(parent.widget):  # the window's own children: Panel, NumberPopup, DropDown, ...
            same = [kid for kid in parent.widget.children if type(kid) is type(widget)]
            return name if len(same) == 1 else f"{name}#{index}"
        return f"{parent.path}/{name}#{index}"

    # --- painting, in Kivy's drawing order

    def _paint_node(self, node: Node) -> None:
        widget = node.widget
        self._painted.add(id(node))
        node.paint_start = len(self.paints)
        by_canvas = {id(kid.widget.canvas): kid for kid in node.kids if getattr(kid.widget, "canvas", None)}
        declared = getattr(widget, "bg_rgba", None)
        if declared is not None:
            self.paints.append(Paint(node, node.rect, _alpha(declared, node.opacity)))
        canvas = getattr(widget, "canvas", None)
        if canvas is not None:
            self._walk(canvas, node, by_canvas, own=declared is None)
        for kid in node.kids:  # a child whose canvas is not in ours (not drawn by it): after it, in order
            if id(kid) not in self._painted:
                self._paint_node(kid)
        node.paint_end = len(self.paints)

    def _walk(self, group: Any, node: Node, by_canvas: dict[int, Node], own: bool) -> None:
        for instr in list(getattr(group, "children", []) or []):
            kind = type(instr).__name__
            kid = by_canvas.get(id(instr))
            if kid is not None:
                self._paint_node(kid)
                continue
            if kind == "Color":
                self._colour = tuple(float(c) for c in instr.rgba)  # type: ignore[assignment]
            elif kind in ("StencilPush", "StencilUnUse"):
                self._masking = True  # the shapes up to StencilUse / StencilPop draw the stencil mask, no colour
            elif kind in ("StencilUse", "StencilPop"):
                self._masking = False
            elif kind in ("Rectangle", "RoundedRectangle", "BorderImage", "SmoothRoundedRectangle"):
                if not self._masking:
                    self._shape(instr, node, own)
            elif hasattr(instr, "children"):  # canvas.before/after, InstructionGroups
                self._walk(instr, node, by_canvas, own)

    def _shape(self, instr: Any, node: Node, own: bool) -> None:
        texture = getattr(instr, "texture", None)
        text = texture is not None and id(texture) in self.text_textures
        if text and texture is getattr(node.widget, "texture", None) and node.text_index is None:
            node.text_index = len(self.paints)
        if not own and not text:
            return  # the widget declared its background (bg_rgba): its own shapes are that paint
        x, y = (float(v) for v in instr.pos)
        w, h = (float(v) for v in instr.size)
        widget = node.widget
        if _is_window(widget):
            x0, y0, x1, y1 = x, y, x + w, y + h
        else:
            # A widget's canvas is in its parent's coordinates, but for those that transform their own
            # canvas (RelativeLayout, Scatter). A ScrollView translates only its children's canvases.
            local = _is(widget, "RelativeLayout", "Scatter")
            x0, y0 = widget.to_window(x, y, initial=not local)
            x1, y1 = widget.to_window(x + w, y + h, initial=not local)
        rect = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        colour = self._colour
        if texture is not None and not text:
            texel = self._texel(texture)
            colour = (colour[0] * texel[0], colour[1] * texel[1], colour[2] * texel[2], colour[3] * texel[3])
        self.paints.append(Paint(node, rect, _alpha(colour, node.opacity), texture_of_text=text))

    def _texel(self, texture: Any) -> RGBA:
        """The colour at the centre of a texture (the stretched middle of a BorderImage)."""
        key = (id(texture), tuple(getattr(texture, "uvpos", ())) + tuple(getattr(texture, "uvsize", ())))
        if key not in self._texel_cache:
            try:
                w, h = int(texture.width), int(texture.height)
                pixels = texture.pixels
                o = ((h // 2) * w + w // 2) * 4
                self._texel_cache[key] = tuple(b / 255 for b in pixels[o:o + 4])  # type: ignore[assignment]
            except Exception:  # a texture that cannot be read: assume it does not tint
                self._texel_cache[key] = (1.0, 1.0, 1.0, 1.0)
        return self._texel_cache[key]

    # --- questions

    def ancestors(self, node: Node) -> Iterator[Node]:
        p = node.parent
        while p is not None:
            yield p
            p = p.parent

    def is_ancestor(self, a: Node, b: Node) -> bool:
        return any(p is a for p in self.ancestors(b))

    def visible(self, node: Node) -> bool:
        """Shown, and its centre not hidden by something drawn after it (see the module's rule)."""
        if not node.shown:
            return False
        centre = _centre(_intersect(node.rect, node.clip) or node.rect)
        after = node.text_index + 1 if node.text_index is not None else node.paint_end
        for paint in self.paints[after:]:
            owner = paint.owner
            if paint.texture_of_text or paint.rgba[3] < OCCLUDING_ALPHA or owner is node:
                continue
            if not _contains(paint.rect, centre) or not _intersect(paint.rect, owner.clip):
                continue
            if self.is_ancestor(owner, node) or self.is_ancestor(node, owner):
                continue
            return False
        return True

    def background(self, node: Node) -> RGBA:
        """The colour painted under the centre of `node` before its text (the module's rule)."""
        centre = _centre(node.rect)
        end = node.text_index if node.text_index is not None else node.paint_end
        colour: tuple[float, float, float] = tuple(float(c) for c in self.window.clearcolor[:3])  # type: ignore
        for paint in self.paints[:end]:
            if paint.texture_of_text or not _contains(paint.rect, centre):
                continue
            if not _contains(paint.owner.clip, centre):
                continue
            colour = theme.blend(paint.rgba, colour)
        return (colour[0], colour[1], colour[2], 1.0)


def _alpha(rgba: Sequence[float], opacity: float) -> RGBA:
    r, g, b = (float(c) for c in rgba[:3])
    a = float(rgba[3]) if len(rgba) > 3 else 1.0
    return (r, g, b, a * opacity)


def _attribute_of(owner: Any, widget: Any) -> str | None:
    attrs = getattr(owner, "__dict__", None)
    if not attrs:
        return None
    found = None
    for name, value in attrs.items():
        if value is widget:
            if not name.startswith("_"):
                return name
            found = found or name
        elif isinstance(value, dict) and len(value) < 500:
            for key, item in value.items():
                if item is widget:
                    return f"{name}[{key!r}]"
        elif isinstance(value, (list, tuple)) and len(value) < 500:
            for i, item in enumerate(value):
                if item is widget:
                    return f"{name}[{i}]"
    return found


def _describe(node: Node) -> str:
    text = _text(node.widget)
    return f"{node.path} {text!r}" if text else node.path


def _text(widget: Any) -> str:
    text = getattr(widget, "text", "")
    if not isinstance(text, str):
        return ""
    if getattr(widget, "markup", False):
        text = _plain(text)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


_TAG = re.compile(r"\[/?[a-z_]+(?:=[^\]]*)?\]")


def _plain(markup: str) -> str:
    """Kivy markup without its tags, escapes undone."""
    return _TAG.sub("", markup).replace("&bl;", "[").replace("&br;", "]").replace("&amp;", "&")


def _labels(tree: Tree) -> Iterator[Node]:
    for node in tree.nodes:
        if _is(node.widget, "Label") and isinstance(getattr(node.widget, "text", None), str) \
                and node.widget.text.strip():
            yield node


# ---------------------------------------------------------------- overflow

ELLIPSIS = ("...", "\u2026")


def overflow(root: Any) -> list[str]:
    """Texts that do not fit their widgets (module docstring)."""
    tree = root if isinstance(root, Tree) else Tree(root)
    problems = []
    for node in _labels(tree):
        if not tree.visible(node):
            continue
        label = node.widget
        tw, th = (float(v) for v in label.texture_size)
        w, h = float(label.width), float(label.height)
        if tw > w + TOLERANCE or th > h + TOLERANCE:
            problems.append(f"overflow: {_describe(node)}: its text needs {tw:.0f}x{th:.0f}, "
                            f"the widget is {w:.0f}x{h:.0f}")
        problems.extend(f"overflow: {_describe(node)}: {why}" for why in _cut(label))
        # A row partly scrolled out of a scrolling area is read by scrolling; the window's edge is final.
        hidden = _outside(_text_rect(node), node.clip) if node.clip == tree.top.clip else ""
        if hidden:
            problems.append(f"overflow: {_describe(node)}: its text is cut by the edge of the window ({hidden})")
    return problems


def _text_rect(node: Node) -> Rect:
    """Where the label's text is drawn (its texture, placed as Kivy's Label places it: centred in the widget)."""
    tw, th = (float(v) for v in node.widget.texture_size)
    cx, cy = _centre(node.rect)
    return (cx - tw / 2, cy - th / 2, cx + tw / 2, cy + th / 2)


def _cut(label: Any) -> list[str]:
    """What of the label's text is not drawn, or drawn broken in the middle of a word."""
    core = getattr(label, "_label", None)
    lines = getattr(core, "_cached_lines", None)
    if core is None or lines is None:
        return []
    text = _plain(label.text) if getattr(label, "markup", False) else label.text
    drawn_lines = ["".join(getattr(word, "text", "") for word in getattr(line, "words", [])) for line in lines]
    drawn = "\n".join(drawn_lines)
    words = set(text.split())
    shortened = bool(getattr(core, "is_shortened", False))
    tokens = drawn.split()
    if shortened:
        for mark in ELLIPSIS:
            drawn = drawn.replace(mark, " ")
        tokens = drawn.split()
    broken = [t for t in tokens if t not in words]
    problems = []
    if broken:
        how = "shortened" if shortened else "wrapped"
        problems.append(f"a word is {how} in the middle: drawn as {' / '.join(drawn_lines)!r}")
    elif shortened and getattr(label, "split_str", "") != " ":
        problems.append(f"shortened without split_str=' ' (could cut words): drawn as {drawn_lines!r}")
    elif not shortened:
        missing = len("".join(text.split())) - len("".join(tokens))
        if missing > 0:
            problems.append(f"{missing} characters are not drawn (drawn: {' / '.join(drawn_lines)!r})")
    return problems


# ---------------------------------------------------------------- overlaps

#: Containers whose children overlap by design: only each child's inside is checked.
OVERLAY_CONTAINERS = ("FloatLayout", "RelativeLayout", "AnchorLayout", "ModalView", "Scatter", "ScatterLayout",
                      "ScreenManager", "PageLayout", "WindowBase")
#: Containers whose children may extend past them (they clip or scroll).
CLIPPING_CONTAINERS = ("ScrollView", "StencilView")


def overlaps(root: Any) -> list[str]:
    """Visible siblings that overlap, and visible widgets that stick out of their parent or the window."""
    tree = root if isinstance(root, Tree) else Tree(root)
    problems = []
    wrect = tree.top.clip
    for parent in tree.nodes:
        shown = [kid for kid in parent.kids if kid.shown]
        clipping = _is(parent.widget, *CLIPPING_CONTAINERS) and not _is_window(parent.widget)
        for kid in shown:
            outside = _outside(kid.rect, wrect if _is_window(parent.widget) else parent.rect)
            if outside and not clipping:
                where = "the window" if _is_window(parent.widget) else _describe(parent)
                problems.append(f"overlap: {_describe(kid)} ({_size(kid.rect)} at {kid.rect[0]:.0f},"
                                f"{kid.rect[1]:.0f}) sticks out of {where} by {outside}")
        if _is(parent.widget, *OVERLAY_CONTAINERS):
            continue
        for i, a in enumerate(shown):
            for b in shown[i + 1:]:
                common = _intersect(a.rect, b.rect)
                if common and common[2] - common[0] > TOLERANCE and common[3] - common[1] > TOLERANCE:
                    problems.append(f"overlap: {_describe(a)} and {_describe(b)} overlap by {_size(common)}")
    return problems


def _outside(inner: Rect, outer: Rect) -> str:
    sides = [("left", outer[0] - inner[0]), ("bottom", outer[1] - inner[1]),
             ("right", inner[2] - outer[2]), ("top", inner[3] - outer[3])]
    return ", ".join(f"{d:.0f} px {side}" for side, d in sides if d > TOLERANCE)


# ---------------------------------------------------------------- contrast

_COLOR_SPAN = re.compile(r"\[color=([^\]]+)\](.*?)\[/color\]", re.DOTALL)


def contrast(root: Any, minimum: float = theme.MIN_CONTRAST) -> list[str]:
    """Visible texts under `minimum` contrast on their background (the module's background rule)."""
    tree = root if isinstance(root, Tree) else Tree(root)
    problems = []
    for node in _labels(tree):
        if not tree.visible(node):
            continue
        label = node.widget
        bg = tree.background(node)
        base = tuple(label.disabled_color if getattr(label, "disabled", False) else label.color)
        base = _alpha(base, node.opacity)
        if base[3] <= 0:
            continue  # a text drawn fully transparent is not shown
        colours: list[tuple[str, Sequence[float]]] = []
        text = label.text
        if getattr(label, "markup", False):
            for spec, inner in _COLOR_SPAN.findall(text):
                if _plain(inner).strip():
                    rgba = _parse_colour(spec)
                    if rgba is not None:
                        colours.append((f"[color={spec}] {_plain(inner).strip()[:30]!r}",
                                        (rgba[0], rgba[1], rgba[2], rgba[3] * base[3])))
            rest = _plain(_COLOR_SPAN.sub("", text)).strip()
        else:
            rest = text.strip()
        if rest:
            colours.insert(0, ("text", base))
        for what, fg in colours:
            ratio = theme.contrast(fg, bg)
            if ratio < minimum:
                where = "" if what == "text" else f" ({what})"
                problems.append(f"contrast: {_describe(node)}{where}: {ratio:.2f}:1, text {_hex(fg)} on {_hex(bg)}")
    return problems


def _parse_colour(spec: str) -> RGBA | None:
    try:
        from kivy.utils import get_color_from_hex

        spec = spec.strip()
        rgba = get_color_from_hex(spec if spec.startswith("#") else "#" + spec)
        return tuple(float(c) for c in rgba) + ((1.0,) if len(rgba) == 3 else ())  # type: ignore[return-value]
    except Exception:
        return None


def _hex(rgba: Sequence[float]) -> str:
    text = "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgba[:3])
    if len(rgba) > 3 and float(rgba[3]) < 1:
        text += f"@{float(rgba[3]):.2f}"
    return text


# ---------------------------------------------------------------- touch targets


def targets(root: Any, min_dp: float = theme.TOUCH) -> list[str]:
    """Visible touch targets under `min_dp` dp (kivy.metrics.dp) in either dimension."""
    from kivy.metrics import dp

    tree = root if isinstance(root, Tree) else Tree(root)
    least = float(dp(min_dp))
    problems = []
    for node in tree.nodes:
        if not _touchable(node) or not tree.visible(node):
            continue
        # What a finger can hit: the part inside the window (a row partly scrolled away is scrolled to).
        hit = (_intersect(node.rect, node.clip) if node.clip == tree.top.clip else None) or node.rect
        w, h = hit[2] - hit[0], hit[3] - hit[1]
        narrow, low = w < least - TOLERANCE, h < least - TOLERANCE
        if narrow or low:
            problems.append(f"target: {_describe(node)} is {w:.0f}x{h:.0f} px, under {min_dp:g} dp "
                            f"({least:.0f} px) {'wide' if narrow else ''}{' and ' if narrow and low else ''}"
                            f"{'high' if low else ''}")
    return problems


def _touchable(node: Node) -> bool:
    widget = node.widget
    if _is_window(widget):
        return False
    if _is(widget, "ButtonBehavior"):
        return True
    own = any(("on_touch_down" in vars(cls) or "on_touch_up" in vars(cls))
              and not cls.__module__.startswith("kivy.") for cls in type(widget).__mro__)
    if not own:
        return False
    return not any(_is(d.widget, "ButtonBehavior") for d in _descendants(node))


def _descendants(node: Node) -> Iterator[Node]:
    for kid in node.kids:
        yield kid
        yield from _descendants(kid)


# ---------------------------------------------------------------- all at once


def check_all(root: Any, picture: Any = None) -> dict[str, list[str]]:
    """Every check (blank only with a picture: a Picture, a PNG's path, pixels): {check name: problems}."""
    tree = root if isinstance(root, Tree) else Tree(root)
    found = {
        "overflow": overflow(tree),
        "overlaps": overlaps(tree),
        "contrast": contrast(tree),
        "targets": targets(tree),
    }
    if picture is not None:
        found = {"blank": blank(picture), **found}
    return found


def report(found: dict[str, list[str]] | Iterable[str]) -> str:
    """Problems as lines for an assertion message."""
    if isinstance(found, dict):
        return "\n".join(p for problems in found.values() for p in problems)
    return "\n".join(found)

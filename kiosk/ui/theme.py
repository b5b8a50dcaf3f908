"""The panel's colours, sizes and the contrast rule every text on it keeps.

One palette for the whole screen so that each colour means one thing: the
selection's colour (SELECT) is used by nothing else, each call state has its
own mark colour, and every text/background pair used on the panel reaches
WCAG AA contrast (4.5:1, `contrast()`), which tests/test_ui_screens.py checks
on the drawn widgets. No Kivy here: tests and the desk's tools read it too.
"""

from __future__ import annotations

from typing import Sequence

RGBA = tuple[float, float, float, float]

# --- surfaces
BG: RGBA = (0.06, 0.06, 0.07, 1)  # the window
SURFACE: RGBA = (0.15, 0.15, 0.17, 1)  # a call row, a field
SURFACE_HI: RGBA = (0.21, 0.22, 0.26, 1)  # the parameters (Line, Route), list items
HEADER: RGBA = (0.09, 0.09, 0.10, 1)  # the table's header

# --- text
TEXT: RGBA = (0.96, 0.96, 0.96, 1)
TEXT_MUTED: RGBA = (0.74, 0.74, 0.77, 1)  # captions, notes, the header
TEXT_DARK: RGBA = (0.05, 0.05, 0.05, 1)  # on the light SELECT and WARN badges

# --- buttons (white text on each is above 4.5:1)
GREEN: RGBA = (0.08, 0.42, 0.15, 1)
RED: RGBA = (0.66, 0.12, 0.10, 1)
BLUE: RGBA = (0.18, 0.36, 0.70, 1)
GREY: RGBA = (0.28, 0.28, 0.31, 1)
AMBER: RGBA = (0.58, 0.36, 0.04, 1)

# --- meaning
#: The selected call, and nothing else: its border, its marker, the "Select several" switch when on.
SELECT: RGBA = (0.35, 0.85, 1.0, 1)
SELECT_BG: RGBA = (0.09, 0.20, 0.27, 1)  # the selected row's background
#: A state's mark (the stripe at a row's left edge); the state is also written in words.
STATE_COLOURS: dict[str, RGBA] = {
    "ringing": (0.20, 0.80, 0.30, 1),
    "dialling": (0.55, 0.75, 0.55, 1),
    "talking": (0.30, 0.75, 0.40, 1),
    "on hold": (0.95, 0.62, 0.10, 1),
    "held by remote": (0.88, 0.62, 0.38, 1),
    "in conference": (0.78, 0.58, 1.0, 1),
    "consulting": (0.95, 0.90, 0.35, 1),
    "ended": (0.62, 0.62, 0.65, 1),
}
RINGING_BG: RGBA = (0.10, 0.30, 0.14, 1)  # the ringing row's pulse, between SURFACE and this
REC_BG: RGBA = (0.72, 0.08, 0.08, 1)  # the REC badge (white text)
#: Do-not-disturb: its mark in the identity strip and its button while on (white text).
DND_BG: RGBA = (0.60, 0.08, 0.38, 1)
#: A missed call the operator has not seen yet, in the History view.
UNSEEN_BG: RGBA = (0.30, 0.09, 0.08, 1)
#: The missed-call count on the History button (white text).
BADGE_BG: RGBA = (0.80, 0.10, 0.08, 1)
#: The keypad's keys while they go to the call as DTMF tones.
TONE_KEY: RGBA = (0.13, 0.32, 0.40, 1)
#: Missed, in the History view: the outcome word and the incoming arrow.
MISSED_TEXT: RGBA = (1.0, 0.60, 0.55, 1)
ANSWERED_TEXT: RGBA = (0.45, 0.85, 0.50, 1)
STATUS_REFUSED: RGBA = (1.0, 0.55, 0.50, 1)
STATUS_ALERT: RGBA = (1.0, 0.78, 0.35, 1)
STATUS_INFO: RGBA = (0.80, 0.90, 1.0, 1)

#: A dimmed button keeps this share of its background colour; its text is TEXT at DIM_TEXT alpha.
DIM_BACKGROUND = 0.35
DIM_TEXT = 0.62

#: The smallest touch target (dp): 9 mm on the 7" 800x480 panel (about 133 px per inch).
TOUCH = 48
#: The minimum contrast of text on its background (WCAG 2.x AA, normal text).
MIN_CONTRAST = 4.5


def _channel(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(rgb: Sequence[float]) -> float:
    """WCAG relative luminance of an sRGB colour (0..1 channels)."""
    r, g, b = (_channel(float(c)) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def blend(fg: Sequence[float], bg: Sequence[float]) -> tuple[float, float, float]:
    """`fg` with its alpha drawn over the opaque `bg`."""
    a = float(fg[3]) if len(fg) > 3 else 1.0
    return tuple(a * float(f) + (1 - a) * float(b) for f, b in zip(fg[:3], bg[:3]))  # type: ignore[return-value]


def contrast(fg: Sequence[float], bg: Sequence[float]) -> float:
    """WCAG contrast ratio of text colour `fg` (alpha blended) on background `bg`: 1..21."""
    lf, lb = luminance(blend(fg, bg)), luminance(bg)
    hi, lo = max(lf, lb), min(lf, lb)
    return (hi + 0.05) / (lo + 0.05)


def dimmed(bg: Sequence[float]) -> RGBA:
    """A dimmed button's background."""
    return (bg[0] * DIM_BACKGROUND, bg[1] * DIM_BACKGROUND, bg[2] * DIM_BACKGROUND, 1)


def mix(a: Sequence[float], b: Sequence[float], t: float) -> RGBA:
    """`a` moved by `t` (0..1) towards `b`."""
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t, 1)

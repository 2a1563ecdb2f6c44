"""Object silhouettes (person, car, sign, ...), one per thing class and the same in every dataset,
and placing them on a canvas."""
from __future__ import annotations

import numpy as np

from pipeline.datasets.miniature.painting import Canvas, Grid, Style


class Frame:
    """Shapes in object coordinates: origin at the bottom centre, y up, 1 = object height."""

    def __init__(self, c: Grid, x: float, b: float, s: float):
        self.c, self.x, self.b, self.s, self.rng = c, x, b, s, c.rng

    def _p(self, u, v):
        return self.x + u * self.s, self.b - v * self.s

    def ellipse(self, u, v, ru, rv, angle=0.0):
        return self.c.ellipse(*self._p(u, v), ru * self.s, rv * self.s, angle)

    def rect(self, u0, v0, u1, v1):
        (x0, bottom), (x1, top) = self._p(u0, v0), self._p(u1, v1)
        return self.c.rect(x0, top, x1, bottom)

    def poly(self, points):
        return self.c.poly([self._p(u, v) for u, v in points])

    def bar(self, u0, v0, u1, v1, width):
        return self.c.bar(*self._p(u0, v0), *self._p(u1, v1), width * self.s)

    def ring(self, u, v, r, width):
        return self.c.ring(*self._p(u, v), r * self.s, width * self.s)


# Each builder returns (mask, detail mask or None); details get the accent colour.

def _person(f: Frame):
    legs = f.bar(-.06, .45, -.08, 0, .08) | f.bar(.06, .45, .08, 0, .08)
    arms = f.bar(-.14, .75, -.2, .42, .06) | f.bar(.14, .75, .2, .42, .06)
    return legs | arms | f.ellipse(0, .6, .14, .2), f.ellipse(0, .9, .08, .1)


def _car(f: Frame):
    cabin = f.poly([(-.7, .6), (-.45, 1), (.5, 1), (.8, .6)])
    wheels = f.ellipse(-.7, .18, .18, .18) | f.ellipse(.7, .18, .18, .18)
    return f.rect(-1.1, .15, 1.1, .62) | cabin, wheels | (cabin & f.rect(-1, .66, 1, .92))


def _bus(f: Frame):
    wheels = f.ellipse(-.9, .12, .12, .12) | f.ellipse(.9, .12, .12, .12)
    return f.rect(-1.3, .1, 1.3, 1), wheels


def _truck(f: Frame):
    wheels = f.ellipse(-.8, .13, .13, .13) | f.ellipse(.8, .13, .13, .13)
    return f.rect(.6, .1, 1.1, .7) | f.rect(-1.1, .15, .55, 1), wheels


def _bicycle(f: Frame):
    wheels = f.ring(-.38, .25, .25, .05) | f.ring(.38, .25, .25, .05)
    frame = f.bar(-.38, .25, 0, .25, .05) | f.bar(0, .25, .15, .65, .05)
    frame |= f.bar(-.38, .25, -.2, .6, .05) | f.bar(.15, .65, .38, .25, .05)
    return wheels | frame | f.bar(-.25, .62, .2, .7, .05), None


def _chair(f: Frame):
    legs = f.bar(-.25, .45, -.28, 0, .08) | f.bar(.25, .45, .28, 0, .08)
    return f.rect(-.3, .45, -.2, 1) | f.rect(-.3, .42, .3, .52) | legs, None


def _table(f: Frame):
    legs = f.bar(-.7, .85, -.7, 0, .1) | f.bar(.7, .85, .7, 0, .1)
    return f.rect(-.85, .85, .85, 1) | legs, None


def _boat(f: Frame):
    hull = f.poly([(-1, .35), (1, .35), (.7, 0), (-.7, 0)])
    sail = f.poly([(.05, 1), (.05, .4), (.6, .4)])
    return hull | f.bar(0, 1, 0, .35, .04), sail


def _cat(f: Frame):
    ears = f.poly([(.37, .8), (.45, 1), (.53, .85)]) | f.poly([(.58, .85), (.66, 1), (.74, .8)])
    legs = f.bar(-.35, .3, -.35, 0, .1) | f.bar(.3, .3, .3, 0, .1)
    body = f.ellipse(0, .4, .55, .25) | f.ellipse(.55, .7, .22, .2)
    return body | ears | legs | f.bar(-.5, .4, -.85, .8, .07), None


def _bird(f: Frame):
    wing = f.poly([(-.1, .45), (.15, .45), (-.3, 1)])
    beak = f.poly([(.4, .65), (.4, .55), (.55, .6)])
    return f.ellipse(0, .35, .35, .2, -20) | f.ellipse(.3, .6, .13, .13) | wing, beak


def _aeroplane(f: Frame):
    wings = f.poly([(-.1, .45), (.25, .45), (-.35, 0), (-.55, 0)])
    tail = f.poly([(-1.15, .45), (-.85, .45), (-1.15, 1)])
    return f.ellipse(0, .45, 1.2, .15) | wings | tail, None


def _pole(f: Frame):
    return f.bar(0, 0, 0, 1, .04), None


def _sign(f: Frame):
    kind = f.rng.integers(3)
    if kind == 0:
        return f.ellipse(0, .5, .5, .5), None
    if kind == 1:
        return f.poly([(-.5, 1), (.5, 1), (0, 0)]), None
    return f.rect(-.5, 0, .5, 1), None


def _light(f: Frame):
    return f.rect(-.2, 0, .2, 1), None


THINGS = {"person": _person, "car": _car, "bus": _bus, "truck": _truck, "bicycle": _bicycle,
          "chair": _chair, "table": _table, "boat": _boat, "cat": _cat, "bird": _bird,
          "aeroplane": _aeroplane, "pole": _pole, "traffic sign": _sign, "traffic light": _light}


def place(c: Canvas, name: str, x: float, b: float, s: float, style: Style) -> None:
    """Paint object `name` of height s standing at (x, b).

    Shapes are evaluated only in the window that can hold the object (|u| <= 1.3, 0 <= v <= 1).
    """
    rows = slice(max(int(b - 1.05 * s) - 2, 0), max(min(int(b + 0.05 * s) + 3, c.h), 0))
    cols = slice(max(int(x - 1.35 * s) - 2, 0), max(min(int(x + 1.35 * s) + 3, c.w), 0))
    mask, detail = np.zeros((c.h, c.w), bool), np.zeros((c.h, c.w), bool)
    window = Frame(Grid(c.xx[rows, cols], c.yy[rows, cols], c.rng), x, b, s)
    mask[rows, cols], part = THINGS[name](window)
    if part is not None:
        detail[rows, cols] = part
    c.paint(mask, name, detail=detail, style=style)


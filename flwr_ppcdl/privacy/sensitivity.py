"""L1 sensitivities of the vectors released by the functional mechanism.

Every function here is pure and states the bound it relies on. The records they describe are the
*bounded* records of :class:`~flwr_ppcdl.privacy.FunctionalMechanism`:

* features ``h = clip_l2(x / c)`` with ``||h||_2 <= 1`` (``d`` coordinates), followed by a constant
  bias coordinate 1, so ``h~ = [h; 1]`` has ``D = d + 1`` coordinates;
* classification labels ``y in {0, ..., K-1}``; regression targets ``|y| <= 1``.

For such a record (reference: ``docs/functional-mechanism.md`` §2.2 and §3.2)

* ``s1 = max ||h~||_1 = sqrt(d) + 1`` (Cauchy-Schwarz on ``h``, plus the bias), attained by the sign
  vectors ``±1/sqrt(d)``;
* ``s2 = max ||h~||_2^2 = 2``.

Neighbouring relations
----------------------
``"replace-one"`` (default, as in the FM paper): the datasets have the same size ``n`` and differ in one
record. The change of a released sum is the difference of two per-record contributions, so
``Δ = 2 · max_record ||contribution||_1``. ``n`` is public.

``"add-remove-one"``: one dataset has one extra record. The change is one record's contribution, so
``Δ = max_record ||contribution||_1`` (half the replace-one value). Under this relation the number of
records is itself private, but the release publishes it exactly (``Release.num_examples``, and the
noise-free ``(bias, bias)`` Gram entry would equal ``n``): **n is not protected** and must be treated
as public by whoever uses this relation. ``ε``-DP under add/remove-one implies ``2ε``-DP under
replace-one.

Floating-point rounding
-----------------------
The totals are multiplied by ``1 + 2**-40`` (:data:`ROUND_UP`). This covers the representation errors
of the per-record terms (``1/K`` is not exact in binary, ``sqrt(d)`` is rounded, the clipping guard
allows ``||h||_2`` to exceed ``1 - 2**-40`` by a few ulps) which are all of relative size below
``1e-14``. Errors of the *summation* over records are not covered here: they depend on ``n`` and are
added by the mechanism (see :func:`flwr_ppcdl.privacy.bounding.summation_slack`).
"""

from __future__ import annotations

import math

NEIGHBOURING_RELATIONS: tuple[str, ...] = ("replace-one", "add-remove-one")

ROUND_UP: float = 1.0 + 2.0**-40
"""Relative safety factor applied to every sensitivity total (see the module docstring)."""


def _check_count(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {value!r} of type {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value}")


def _check_dimension(d: int) -> None:
    _check_count("number of features d", d, 1)


def _check_classes(num_classes: int) -> None:
    _check_count("num_classes", num_classes, 2)


def neighbour_factor(neighbouring: str) -> float:
    """Factor turning a per-record L1 bound into a sensitivity.

    Returns 2 for ``"replace-one"`` (a removed and an added contribution) and 1 for
    ``"add-remove-one"`` (one contribution).
    """
    if neighbouring == "replace-one":
        return 2.0
    if neighbouring == "add-remove-one":
        return 1.0
    raise ValueError(f"neighbouring must be one of {NEIGHBOURING_RELATIONS}; got {neighbouring!r}")


def l1_norm_bound(d: int) -> float:
    """``s1``: largest ``||[h; 1]||_1`` over ``||h||_2 <= 1`` in ``d`` dimensions, ``sqrt(d) + 1``.

    Tight: attained by ``h = (±1, ..., ±1) / sqrt(d)``.
    """
    _check_dimension(d)
    return math.sqrt(d) + 1.0


def squared_l2_norm_bound(d: int) -> float:
    """``s2``: largest ``||[h; 1]||_2^2`` over ``||h||_2 <= 1``, which is 2 for every ``d``.

    Tight: attained by any ``h`` on the unit sphere.
    """
    _check_dimension(d)
    return 2.0


def gram_record_l1(d: int) -> float:
    """Largest L1 norm of one record's contribution to the upper triangle (with diagonal) of the Gram.

    ``Σ_{j<=l} |h~_j h~_l| = (||h~||_1^2 + ||h~||_2^2) / 2 <= (s1^2 + s2) / 2``; both norms are maximal
    at the same record (a sign vector), so the bound is attained.
    """
    s1, s2 = l1_norm_bound(d), squared_l2_norm_bound(d)
    return (s1 * s1 + s2) / 2.0


def cross_classification_record_l1(d: int, num_classes: int) -> float:
    """Largest L1 norm of one record's contribution ``(e_y - 1/K) h~ᵀ`` to the classification cross term.

    ``||e_y - 1/K||_1 = 2(K-1)/K`` for every label, so the bound is ``2(K-1)/K · s1``, attained by a
    sign-vector record with any label.
    """
    _check_classes(num_classes)
    k = float(num_classes)
    return 2.0 * (k - 1.0) / k * l1_norm_bound(d)


def cross_regression_record_l1(d: int) -> float:
    """Largest L1 norm of one record's contribution ``y h~`` to the regression cross term (``|y| <= 1``).

    The bound ``s1`` is attained by a sign-vector record with ``|y| = 1``.
    """
    return l1_norm_bound(d)


def sensitivity_gram(d: int, neighbouring: str = "replace-one") -> float:
    """L1 sensitivity of the released Gram upper triangle alone (see :func:`gram_record_l1`).

    Replace-one: ``(s1^2 + s2)``; add/remove-one: half of it. Under replace-one the worst neighbouring
    pair only reaches about half of this value (``h h^T`` cannot change sign), which is why a pair
    bound is not tight for this part; the per-record bound is.
    """
    return neighbour_factor(neighbouring) * gram_record_l1(d) * ROUND_UP


def sensitivity_cross_classification(
    d: int, num_classes: int, neighbouring: str = "replace-one"
) -> float:
    """L1 sensitivity of the released classification cross term ``C = Σ (e_y - 1/K) h~ᵀ`` alone.

    Replace-one: ``2 · 2(K-1)/K · s1`` (attained for ``K = 2``; for ``K > 2`` the bias column limits
    the worst pair); add/remove-one: half of it, attained.
    """
    return (
        neighbour_factor(neighbouring) * cross_classification_record_l1(d, num_classes) * ROUND_UP
    )


def sensitivity_cross_regression(d: int, neighbouring: str = "replace-one") -> float:
    """L1 sensitivity of the released regression cross term ``b = Σ y h~`` alone (``|y| <= 1``).

    Replace-one: ``2 · s1``, attained by one record with ``y = 1`` replaced by the same features with
    ``y = -1``; add/remove-one: ``s1``, attained.
    """
    return neighbour_factor(neighbouring) * cross_regression_record_l1(d) * ROUND_UP


def sensitivity_softmax(d: int, num_classes: int, neighbouring: str = "replace-one") -> float:
    """L1 sensitivity of the whole classification release ``(C, upper(G))``.

    ``Δ = factor · [(2(K-1)/K) · s1 + (s1^2 + s2)/2]`` with ``s1 = sqrt(d) + 1``, ``s2 = 2``
    (reference table §3.2, ℓ2 bound with bias). Guarantee: releasing both vectors plus i.i.d.
    ``Lap(Δ/ε)`` noise on every released coordinate is ``ε``-DP under ``neighbouring``, provided the
    records are bounded as described in the module docstring. ``K = 2`` is binary logistic regression.
    """
    per_record = cross_classification_record_l1(d, num_classes) + gram_record_l1(d)
    return neighbour_factor(neighbouring) * per_record * ROUND_UP


def sensitivity_regression(d: int, neighbouring: str = "replace-one") -> float:
    """L1 sensitivity of the whole regression release ``(b, upper(G))`` with ``|y| <= 1``.

    ``Δ = factor · [s1 + (s1^2 + s2)/2]`` (reference table §2.2, Gram column: its ℓ2 row
    ``d + 1 + 2 sqrt(d)`` is this formula with ``s1 = sqrt(d)``, ``s2 = 1``, i.e. without a bias; here
    the bias is appended, so ``s1 = sqrt(d) + 1``, ``s2 = 2``). Guarantee as in
    :func:`sensitivity_softmax`.
    """
    per_record = cross_regression_record_l1(d) + gram_record_l1(d)
    return neighbour_factor(neighbouring) * per_record * ROUND_UP


# --------------------------------------------------------------------------- L2 sensitivities
#
# The Gaussian mechanism needs the L2 distance between the released vectors of neighbouring
# datasets. The released vector is v(D) = Σ_i φ(h_i, y_i) with
#
#     φ(h, y) = (upper(h~ h~ᵀ) including the diagonal, cross(h, y)),     h~ = [h; 1],  ||h||_2 <= 1,
#
# cross = (e_y - 1/K) h~ᵀ (classification, flattened) or y h~ (regression, |y| <= 1). Each unique
# Gram entry is released once, so an off-diagonal entry counts once in the norm, not twice.
#
# Notation for a pair of records: r = ||h||, r' = ||h'||, s = h·h' (|s| <= r r'), u = e_y - 1/K,
# c = ||u||^2 = 1 - 1/K, u·u' = [y = y'] - 1/K.


def _squared_l2_softmax(d: int, num_classes: int, neighbouring: str) -> float:
    _check_dimension(d)
    _check_classes(num_classes)
    k = float(num_classes)
    c = 1.0 - 1.0 / k
    neighbour_factor(neighbouring)  # validates the relation (raises ValueError naming it)
    if neighbouring == "add-remove-one":
        return 5.0 - 2.0 / k  # 3 (Gram) + 2c (cross)
    if d == 1:
        return 8.0 - 4.0 / k
    return 8.0 - 2.0 / k + c * c / 2.0


def _squared_l2_regression(d: int, neighbouring: str) -> float:
    _check_dimension(d)
    neighbour_factor(neighbouring)  # validates the relation (raises ValueError naming it)
    if neighbouring == "add-remove-one":
        return 5.0  # 3 (Gram) + 2 (cross)
    return 8.0 if d == 1 else 10.0


def sensitivity_softmax_l2(d: int, num_classes: int, neighbouring: str = "replace-one") -> float:
    """L2 sensitivity of the whole classification release ``(upper(G), C)`` (any ``K >= 2``).

    Guarantee: for records bounded as in the module docstring (``||h||_2 <= 1``, bias appended,
    labels in ``{0..K-1}``), the released vectors of two neighbouring datasets are at most this far
    apart in L2 (before floating-point summation error, which the caller adds: see
    :func:`flwr_ppcdl.privacy.calibration.gaussian_l2_bound`). ``K = 2`` is binary logistic regression.

    Values (``c = 1 - 1/K``; multiplied by :data:`ROUND_UP`):

    * replace-one, ``d >= 2``: ``Δ₂² = 8 - 2/K + c²/2 = 8.5 - 3/K + 1/(2K²)`` (``K = 10``: 2.86444);
    * replace-one, ``d = 1``: ``Δ₂² = 8 - 4/K`` (``K = 10``: 2.75681);
    * add/remove-one, every ``d``: ``Δ₂² = 5 - 2/K`` (``K = 10``: 2.19089).

    Derivation, replace-one. Let ``M = h hᵀ - h' h'ᵀ``. For a symmetric ``M``,
    ``||upper(M)||² = (||M||_F² + Σ_j M_jj²) / 2 <= ||M||_F² = r⁴ + r'⁴ - 2s²``, with equality iff
    ``M`` is diagonal. The Gram's bias column changes by ``h - h'`` (``r² + r'² - 2s``); the
    (bias, bias) entry does not change. The cross term changes by ``u h~ᵀ - u' h~'ᵀ`` whose squared
    Frobenius norm is ``c||h~||² + c||h~'||² - 2(u·u')(h~·h~')``:

    * ``y != y'``: ``2 + c(r² + r'²) + 2s/K``. Total ``<= r⁴ + r'⁴ + (1 + c)(r² + r'²) - 2s² - 2cs
      + 2``, increasing in ``r, r'`` at fixed ``s`` (raising them keeps ``|s| <= r r'``), so
      ``<= 8 - 2/K - 2s² - 2cs <= 8 - 2/K + c²/2`` at ``s = -c/2``. For ``d >= 2`` this is attained
      by ``h = (cos a, sin a, 0, ...)``, ``h' = (sin a, cos a, 0, ...)`` with ``sin 2a = -c/2``: then
      ``M = cos 2a · diag(1, -1, 0, ...)`` is diagonal and every inequality is an equality.
    * ``y = y'``: ``c||h - h'||²``, total ``<= 2 - 2s² + (1 + c)(2 - 2s) <= 8 - 4/K + 1/(2K²)``
      (at ``s = -(1 + c)/2``), which is ``1/2 + 1/K`` below the ``y != y'`` value; so the
      ``y != y'`` case decides.

    For ``d = 1`` (scalars ``a, b`` in ``[-1, 1]``, ``s = ab``, ``|s| = r r'``) the point
    ``s = -c/2`` with ``r = r' = 1`` does not exist. With ``y != y'`` the total is
    ``(a² - b²)² + (a - b)² + c(2 + a² + b²) + (2/K)(1 + ab)`` and with ``y = y'`` it is
    ``(a² - b²)² + (1 + c)(a - b)²``; both have maximum ``8 - 4/K`` on the square, at ``a = -b = ±1``
    (checked by dense grids and a local optimiser in ``tests/privacy/test_gaussian_sensitivity.py``),
    so the general ``d >= 2`` value would be valid but loose by ``c²/2`` there.

    Derivation, add/remove-one: the change is one record's ``||φ(h, y)||``. Gram: the h block
    contributes ``Σ_{j<=l} (h_j h_l)² = (r⁴ + Σ_j h_j⁴)/2 <= r⁴`` (equality iff ``h`` is a multiple of
    a basis vector), the bias column ``r²`` and the (bias, bias) entry 1 (it counts here: it equals
    ``n``), so ``<= 3``; cross: ``c(1 + r²) <= 2c``. Total ``5 - 2/K``, attained by ``h = e_1`` with
    any label, for every ``d >= 1``.
    """
    return math.sqrt(_squared_l2_softmax(d, num_classes, neighbouring)) * ROUND_UP


def sensitivity_regression_l2(d: int, neighbouring: str = "replace-one") -> float:
    """L2 sensitivity of the whole regression release ``(upper(G), b)``, ``b = Σ y h~``, ``|y| <= 1``.

    Guarantee as in :func:`sensitivity_softmax_l2`. Values (multiplied by :data:`ROUND_UP`):

    * replace-one, ``d >= 2``: ``Δ₂ = sqrt(10)`` (3.16228);
    * replace-one, ``d = 1``: ``Δ₂ = sqrt(8)`` (2.82843);
    * add/remove-one, every ``d``: ``Δ₂ = sqrt(5)`` (2.23607).

    Derivation, replace-one. Gram part as in :func:`sensitivity_softmax_l2`:
    ``<= r⁴ + r'⁴ - 2s² + r² + r'² - 2s``. Cross part ``||y h~ - y' h~'||² = y²(1 + r²) +
    y'²(1 + r'²) - 2yy'(1 + s)`` is convex in ``(y, y')``, so its maximum over ``[-1, 1]²`` is at a
    vertex: ``yy' = -1`` gives ``4 + r² + r'² + 2s``, ``yy' = 1`` gives ``r² + r'² - 2s``, and the
    first is at least the second since ``s >= -1``. Total ``<= r⁴ + r'⁴ - 2s² + 2(r² + r'²) + 4 <=
    10 - 2s² <= 10`` (``r = r' = 1``, ``s = 0``). Attained for ``d >= 2`` by ``h = e_1, y = 1`` and
    ``h' = e_2, y' = -1`` (``M = diag(1, -1, 0, ...)`` is diagonal).

    For ``d = 1`` the total ``(a² - b²)² + (a - b)² + y²(1 + a²) + y'²(1 + b²) - 2yy'(1 + ab)`` has
    maximum 8 on ``[-1, 1]⁴`` (e.g. ``a = 1, b = -1, y = y' = 1``: the Gram part 4 from the bias
    column, the cross part 4 from the bias coordinate); ``sqrt(10)`` is valid but loose there.

    Add/remove-one: Gram ``<= 3`` as in :func:`sensitivity_softmax_l2`, cross ``y²(1 + r²) <= 2``;
    total 5, attained by ``h = e_1, y = ±1`` for every ``d``.
    """
    return math.sqrt(_squared_l2_regression(d, neighbouring)) * ROUND_UP

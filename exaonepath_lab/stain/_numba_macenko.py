"""numba kernels behind :mod:`exaonepath_lab.stain.cpu_kernels` (imported lazily).

Module-level functions so that numba's on-disk cache (``cache=True``) works: the
first use compiles (several seconds), later processes load the machine code. The
kernels are serial over a range of images and release the GIL (``nogil``); the
caller runs one range per thread, which compiles much faster than ``prange``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _select(a, idx, lo, hi, k):
    # Hoare quickselect with median-of-three pivot on a[lo..hi]; permutes idx alongside.
    while hi > lo:
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
            idx[mid], idx[lo] = idx[lo], idx[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
            idx[hi], idx[lo] = idx[lo], idx[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
            idx[hi], idx[mid] = idx[mid], idx[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                idx[i], idx[j] = idx[j], idx[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return
    return

@njit(cache=True, nogil=True)
def _pseudo_angle(x, y):
    # Monotone increasing in atan2(y, x) on (−π, π]: the "diamond angle" in [−2, 2]:
    # d for x ≥ 0, ±2 − d for x < 0 (sign of y). Written without branches because the
    # sign of x flips from pixel to pixel and mispredicted branches dominated this loop.
    d = y / (abs(x) + abs(y) + 1e-300)  # 1e-300: atan2(0, 0) = 0 ↦ 0
    neg = 1.0 if x < 0.0 else 0.0
    return d + neg * (math.copysign(2.0, y) - 2.0 * d)


@njit(cache=True, nogil=True)
def _tables(m, od_lut, Io, tab):
    # tab[ch, v, c] = exp(-od_lut[v] * m[ch, c]); Io folded into the red-channel table.
    for ch in range(3):
        for v in range(256):
            for c in range(3):
                e = math.exp(-od_lut[v] * m[ch, c])
                tab[ch, v, c] = e * Io if ch == 0 else e

@njit(cache=True, nogil=True)
def _reconstruct(px_i, tab, out_i):
    for p in range(px_i.shape[0]):
        r = px_i[p, 0]
        g = px_i[p, 1]
        b = px_i[p, 2]
        for c in range(3):
            val = tab[0, r, c] * tab[1, g, c] * tab[2, b, c]
            if val > 255.0:
                val = 255.0
            out_i[p, c] = np.uint8(val)  # truncation, like torchstain's .int()

@njit(cache=True, nogil=True)
def _transform(pinv, mc, tsm, tmc):
    # M = pinvᵀ · diag(tmc / mc) · tsmᵀ  (3×3, row-vector OD convention)
    m = np.empty((3, 3))
    for ch in range(3):
        for c in range(3):
            m[ch, c] = pinv[0, ch] * (tmc[0] / mc[0]) * tsm[c, 0] + pinv[1, ch] * (tmc[1] / mc[1]) * tsm[c, 1]
    return m

@njit(cache=True, nogil=True)
def _bounds(samp, m, k, n):
    # samp[:m]: a sample of a set of n values (reordered in place). Returns an interval
    # [L, U] that holds the set's k-th smallest value with high probability (±3 binomial σ
    # of the sample rank); the caller falls back to a full selection when it does not.
    if m < 32:
        return -np.inf, np.inf
    pq = (k + 0.5) / n
    r = pq * m
    d = 3.0 * math.sqrt(m * pq * (1.0 - pq)) + 2.0
    lo = int(math.floor(r - d))
    hi = int(math.ceil(r + d))
    dummy = np.empty(m, np.int64)
    lo_v = -np.inf
    hi_v = np.inf
    start = 0
    if lo >= 0:
        _select(samp, dummy, 0, m - 1, lo)
        lo_v = samp[lo]
        start = lo
    if hi < m:
        _select(samp, dummy, start, m - 1, hi)
        hi_v = samp[hi]
    return lo_v, hi_v


@njit(cache=True, nogil=True)
def _eigh3(cov):
    """Eigen-decomposition of a symmetric 3×3 matrix by cyclic Jacobi rotations.

    Returns (w (3,) ascending, v (3, 3) eigenvectors in columns). Used instead of
    np.linalg.eigh because numba compiles the LAPACK wrapper slowly; Jacobi is exact to
    float64 rounding for 3×3.
    """
    a = np.empty((3, 3))
    v = np.zeros((3, 3))
    for i in range(3):
        v[i, i] = 1.0
        for j in range(3):
            a[i, j] = cov[i, j]
    for _ in range(64):
        off = a[0, 1] * a[0, 1] + a[0, 2] * a[0, 2] + a[1, 2] * a[1, 2]
        scale = a[0, 0] * a[0, 0] + a[1, 1] * a[1, 1] + a[2, 2] * a[2, 2]
        if off <= 1e-32 * scale or off == 0.0:
            break
        for pq in range(3):
            p = 0 if pq < 2 else 1
            q = 1 if pq == 0 else 2
            apq = a[p, q]
            if apq == 0.0:
                continue
            theta = (a[q, q] - a[p, p]) / (2.0 * apq)
            t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
            if theta < 0.0:
                t = -t
            c = 1.0 / math.sqrt(t * t + 1.0)
            sn = t * c
            a[p, p] -= t * apq
            a[q, q] += t * apq
            a[p, q] = 0.0
            a[q, p] = 0.0
            r = 3 - p - q
            arp = a[r, p]
            arq = a[r, q]
            a[r, p] = a[p, r] = c * arp - sn * arq
            a[r, q] = a[q, r] = sn * arp + c * arq
            for k in range(3):
                vkp = v[k, p]
                vkq = v[k, q]
                v[k, p] = c * vkp - sn * vkq
                v[k, q] = sn * vkp + c * vkq
    # ascending order (3 elements: selection by hand, no generic sort to compile)
    o0, o1, o2 = 0, 1, 2
    if a[o1, o1] < a[o0, o0]:
        o0, o1 = o1, o0
    if a[o2, o2] < a[o1, o1]:
        o1, o2 = o2, o1
    if a[o1, o1] < a[o0, o0]:
        o0, o1 = o1, o0
    wo = np.empty(3)
    vo = np.empty((3, 3))
    for j in range(3):
        oj = o0 if j == 0 else (o1 if j == 1 else o2)
        wo[j] = a[oj, oj]
        for k in range(3):
            vo[k, j] = v[k, oj]
    return wo, vo


@njit(cache=True, nogil=True)
def _pick(buf, bidx, cnt, below, k):
    # k-th smallest overall, given `below` values < band and the band values buf[:cnt].
    # Returns its payload (bidx) and value, or (-1, 0) when the band missed it.
    kk = k - below
    if kk < 0 or kk >= cnt:
        return -1, 0.0
    _select(buf, bidx, 0, cnt - 1, kk)
    return bidx[kk], buf[kk]

@njit(cache=True, nogil=True)
def _angle_key(pxi, p, ptab):
    # ptab[ch, v, k] = od_lut[v] · e[ch, k]: the same products as OD·E, looked up.
    r = pxi[p, 0]
    g = pxi[p, 1]
    b = pxi[p, 2]
    x = ptab[0, r, 0] + ptab[1, g, 0] + ptab[2, b, 0]
    y = ptab[0, r, 1] + ptab[1, g, 1] + ptab[2, b, 1]
    return _pseudo_angle(x, y), x, y

@njit(cache=True, nogil=True)
def _angle_percentiles(pxi, ptab, tis, n, k_lo, k_hi):
    """Pixels holding the k_lo-th and k_hi-th smallest pseudo-angle among the n tissue pixels tis[:n]."""
    st = max(1, n // 512)
    samp = np.empty(n // st + 1)
    m = 0
    for q in range(0, n, st):
        samp[m] = _angle_key(pxi, tis[q], ptab)[0]
        m += 1
    l1, u1 = _bounds(samp, m, k_lo, n)
    l2, u2 = _bounds(samp, m, k_hi, n)
    b1 = np.empty(n)
    i1 = np.empty(n, np.int64)
    b2 = np.empty(n)
    i2 = np.empty(n, np.int64)
    c1 = 0
    c2 = 0
    below1 = 0
    below2 = 0
    for q in range(n):
        p = tis[q]
        key = _angle_key(pxi, p, ptab)[0]
        if key < l1:
            below1 += 1
        elif key <= u1:
            b1[c1] = key
            i1[c1] = p
            c1 += 1
        if key < l2:
            below2 += 1
        elif key <= u2:
            b2[c2] = key
            i2[c2] = p
            c2 += 1
    p_lo = _pick(b1, i1, c1, below1, k_lo)[0]
    p_hi = _pick(b2, i2, c2, below2, k_hi)[0]
    if p_lo < 0 or p_hi < 0:  # the sample misled the band (rare): select over all
        for q in range(n):
            b1[q] = _angle_key(pxi, tis[q], ptab)[0]
            i1[q] = tis[q]
        _select(b1, i1, 0, n - 1, k_lo)
        p_lo = i1[k_lo]
        _select(b1, i1, k_lo, n - 1, k_hi)
        p_hi = i1[k_hi]
    return p_lo, p_hi


@njit(cache=True, nogil=True)
def _conc_percentile(pxi, ctab, k):
    """k-th smallest concentration of each stain over all pixels (2,)."""
    n_px = pxi.shape[0]
    st = max(1, n_px // 512)
    m = (n_px + st - 1) // st
    s0 = np.empty(m)
    s1 = np.empty(m)
    q = 0
    for p in range(0, n_px, st):
        r = pxi[p, 0]
        g = pxi[p, 1]
        b = pxi[p, 2]
        s0[q] = ctab[0, r, 0] + ctab[1, g, 0] + ctab[2, b, 0]
        s1[q] = ctab[0, r, 1] + ctab[1, g, 1] + ctab[2, b, 1]
        q += 1
    l0, u0 = _bounds(s0, q, k, n_px)
    l1, u1 = _bounds(s1, q, k, n_px)
    b0 = np.empty(n_px)
    b1 = np.empty(n_px)
    dummy = np.empty(n_px, np.int64)
    c0 = 0
    c1 = 0
    below0 = 0
    below1 = 0
    for p in range(n_px):
        r = pxi[p, 0]
        g = pxi[p, 1]
        b = pxi[p, 2]
        v0 = ctab[0, r, 0] + ctab[1, g, 0] + ctab[2, b, 0]
        v1 = ctab[0, r, 1] + ctab[1, g, 1] + ctab[2, b, 1]
        if v0 < l0:
            below0 += 1
        elif v0 <= u0:
            b0[c0] = v0
            c0 += 1
        if v1 < l1:
            below1 += 1
        elif v1 <= u1:
            b1[c1] = v1
            c1 += 1
    out = np.empty(2)
    j, v = _pick(b0, dummy, c0, below0, k)
    if j < 0:
        for p in range(n_px):
            b0[p] = ctab[0, pxi[p, 0], 0] + ctab[1, pxi[p, 1], 0] + ctab[2, pxi[p, 2], 0]
        _select(b0, dummy, 0, n_px - 1, k)
        v = b0[k]
    out[0] = v
    j, v = _pick(b1, dummy, c1, below1, k)
    if j < 0:
        for p in range(n_px):
            b1[p] = ctab[0, pxi[p, 0], 1] + ctab[1, pxi[p, 1], 1] + ctab[2, pxi[p, 2], 1]
        _select(b1, dummy, 0, n_px - 1, k)
        v = b1[k]
    out[1] = v
    return out

@njit(cache=True, nogil=True)
def fit_apply(px, stride, od_lut, tmax, need, alpha, k99, sin2_min, min_eig, min_maxc, tsm, tmc, Io, do_apply,
              out, sm_out, mc_out, code_out, ntis_out, i0, i1):
    # Passes 1–3 (estimation) read every `stride`-th pixel (1 = all, exact); pass 4 all.
    for i in range(i0, i1):
        pxi = px[i, ::stride]
        n_px = pxi.shape[0]
        # ---- pass 1: tissue mask and covariance sums ----
        n = 0
        tis = np.empty(n_px, np.int32)
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s00 = 0.0
        s01 = 0.0
        s02 = 0.0
        s11 = 0.0
        s12 = 0.0
        s22 = 0.0
        # Branch-free: tissue and background pixels interleave unpredictably, and
        # mispredicted branches cost more than the arithmetic on background pixels.
        for p in range(n_px):
            r = pxi[p, 0]
            g = pxi[p, 1]
            b = pxi[p, 2]
            t = max(r, max(g, b)) <= tmax
            wt = 1.0 if t else 0.0
            o0 = od_lut[r] * wt
            o1 = od_lut[g] * wt
            o2 = od_lut[b] * wt
            tis[n] = p
            n += 1 if t else 0
            s0 += o0
            s1 += o1
            s2 += o2
            s00 += o0 * o0
            s01 += o0 * o1
            s02 += o0 * o2
            s11 += o1 * o1
            s12 += o1 * o2
            s22 += o2 * o2
        ntis_out[i] = n
        code = 0
        if n < need:
            code = 1
        else:
            cov = np.empty((3, 3))
            cov[0, 0] = (s00 - s0 * s0 / n) / (n - 1)
            cov[1, 1] = (s11 - s1 * s1 / n) / (n - 1)
            cov[2, 2] = (s22 - s2 * s2 / n) / (n - 1)
            cov[0, 1] = cov[1, 0] = (s01 - s0 * s1 / n) / (n - 1)
            cov[0, 2] = cov[2, 0] = (s02 - s0 * s2 / n) / (n - 1)
            cov[1, 2] = cov[2, 1] = (s12 - s1 * s2 / n) / (n - 1)
            w, vecs = _eigh3(cov)
            if not (w[2] > min_eig):
                code = 2
        if code == 0:
            # fixed sign: largest-magnitude component positive (as estimate._fixed_sign)
            e = np.empty((3, 2))
            for col in range(2):
                best = 0
                for a in range(3):
                    if abs(vecs[a, col + 1]) > abs(vecs[best, col + 1]):
                        best = a
                sg = 1.0 if vecs[best, col + 1] >= 0 else -1.0
                for a in range(3):
                    e[a, col] = vecs[a, col + 1] * sg
            # ---- pass 2: pseudo-angles of tissue pixels, nearest-rank percentiles ----
            k_lo = int(np.rint((0.01 * alpha) * (n - 1)))
            k_hi = int(np.rint((0.01 * (100.0 - alpha)) * (n - 1)))
            ptab = np.empty((3, 256, 2))
            for a in range(3):
                for vv in range(256):
                    ptab[a, vv, 0] = od_lut[vv] * e[a, 0]
                    ptab[a, vv, 1] = od_lut[vv] * e[a, 1]
            p_lo, p_hi = _angle_percentiles(pxi, ptab, tis, n, k_lo, k_hi)
            v = np.empty((3, 2))
            for col in range(2):
                pp = p_lo if col == 0 else p_hi
                _, x, y = _angle_key(pxi, pp, ptab)
                rr = math.sqrt(x * x + y * y)
                if rr == 0.0:
                    rr = 1.0
                for a in range(3):
                    v[a, col] = e[a, 0] * (x / rr) + e[a, 1] * (y / rr)
            # hematoxylin first: larger red OD
            # Round to float32 (what StainParams stores) so normalize ≡ fit_stains + apply.
            he = np.empty((3, 2))
            hcol = 0 if v[0, 0] > v[0, 1] else 1
            for a in range(3):
                he[a, 0] = np.float64(np.float32(v[a, hcol]))
                he[a, 1] = np.float64(np.float32(v[a, 1 - hcol]))
            g00 = he[0, 0] * he[0, 0] + he[1, 0] * he[1, 0] + he[2, 0] * he[2, 0]
            g11 = he[0, 1] * he[0, 1] + he[1, 1] * he[1, 1] + he[2, 1] * he[2, 1]
            g01 = he[0, 0] * he[0, 1] + he[1, 0] * he[1, 1] + he[2, 0] * he[2, 1]
            det = g00 * g11 - g01 * g01
            if not (det > sin2_min * g00 * g11):
                code = 2
            else:
                pinv = np.empty((2, 3))
                for a in range(3):
                    pinv[0, a] = (g11 * he[a, 0] - g01 * he[a, 1]) / det
                    pinv[1, a] = (-g01 * he[a, 0] + g00 * he[a, 1]) / det
                # ---- pass 3: concentrations of all pixels, 99th percentile ----
                ctab = np.empty((3, 256, 2))  # ctab[channel, intensity, stain]
                for k in range(2):
                    for a in range(3):
                        for vv in range(256):
                            ctab[a, vv, k] = pinv[k, a] * od_lut[vv]
                mc = _conc_percentile(pxi, ctab, k99)
                mc[0] = np.float64(np.float32(mc[0]))
                mc[1] = np.float64(np.float32(mc[1]))
                if not (mc[0] > min_maxc and mc[1] > min_maxc):
                    code = 2
                else:
                    for a in range(3):
                        for k in range(2):
                            sm_out[i, a, k] = he[a, k]
                    mc_out[i, 0] = mc[0]
                    mc_out[i, 1] = mc[1]
                    if do_apply:
                        # ---- pass 4: reconstruction with the target ----
                        m = _transform(pinv, mc, tsm, tmc)
                        tab = np.empty((3, 256, 3), np.float32)
                        _tables(m, od_lut, Io, tab)
                        _reconstruct(px[i], tab, out[i])
        code_out[i] = code
        if code != 0 and do_apply:
            out[i, :, :] = px[i]

@njit(cache=True, nogil=True)
def apply(px, od_lut, sm, mc, ok, tsm, tmc, Io, out, i0, i1):
    for i in range(i0, i1):
        if not ok[i]:
            out[i, :, :] = px[i]
            continue
        he = sm[i].astype(np.float64)
        g00 = he[0, 0] * he[0, 0] + he[1, 0] * he[1, 0] + he[2, 0] * he[2, 0]
        g11 = he[0, 1] * he[0, 1] + he[1, 1] * he[1, 1] + he[2, 1] * he[2, 1]
        g01 = he[0, 0] * he[0, 1] + he[1, 0] * he[1, 1] + he[2, 0] * he[2, 1]
        det = g00 * g11 - g01 * g01
        pinv = np.empty((2, 3))
        for a in range(3):
            pinv[0, a] = (g11 * he[a, 0] - g01 * he[a, 1]) / det
            pinv[1, a] = (-g01 * he[a, 0] + g00 * he[a, 1]) / det
        m = _transform(pinv, mc[i].astype(np.float64), tsm, tmc)
        tab = np.empty((3, 256, 3), np.float32)
        _tables(m, od_lut, Io, tab)
        _reconstruct(px[i], tab, out[i])

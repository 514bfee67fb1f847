"""Plain NumPy references of the rules, written from the papers, step by step."""

import numpy as np


def sq_dist(u):
  n = len(u)
  return np.array([[np.sum((u[i] - u[j]) ** 2) for j in range(n)] for i in range(n)])


def krum_scores(u, f, squared=True):
  n = len(u)
  d = sq_dist(u) if squared else np.sqrt(sq_dist(u))
  return np.array([np.sort(np.delete(d[i], i))[: n - f - 2].sum() for i in range(n)])


def pick(scores, dist):
  """Smallest score; ties (arbitrary in the papers) by the sum of distances."""
  scores = np.asarray(scores)
  tied = np.flatnonzero(scores == scores.min())
  return int(tied[np.argmin(dist[tied].sum(axis=1))])


def krum(u, f, squared=True):
  return u[pick(krum_scores(u, f, squared), sq_dist(u))]


def bulyan(u, f):
  """El Mhamdi et al. 2018: iterative Krum selection, then coordinate-wise phase."""
  n = len(u)
  remaining = list(range(n))
  selected = []
  for _ in range(n - 2 * f):
    sub = u[remaining]
    m = len(remaining)
    d = sq_dist(sub)
    k = max(m - f - 2, 0)
    scores = [np.sort(np.delete(d[i], i))[:k].sum() for i in range(m)]
    best = remaining[pick(scores, d)]
    selected.append(best)
    remaining.remove(best)
  s = u[selected]
  beta = len(selected) - 2 * f
  med = np.median(s, axis=0)
  idx = np.argsort(np.abs(s - med), axis=0, kind="stable")[:beta]
  return np.take_along_axis(s, idx, axis=0).mean(axis=0), sorted(selected)


def meamed(u, f):
  n = len(u)
  med = np.median(u, axis=0)
  idx = np.argsort(np.abs(u - med), axis=0, kind="stable")[: n - f]
  return np.take_along_axis(u, idx, axis=0).mean(axis=0)


def trimmed_mean(u, t):
  return np.sort(u, axis=0)[t: len(u) - t].mean(axis=0)


def nnm(u, f):
  d = sq_dist(u)
  n = len(u)
  return np.stack([u[np.argsort(d[i], kind="stable")[: n - f]].mean(axis=0) for i in range(n)])

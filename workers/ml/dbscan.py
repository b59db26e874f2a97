"""Per-species outlier finding: standardise, optionally PCA, DBSCAN with eps from the knee.

`cluster(features, min_samples=5)` standardises the rows (zero mean, unit variance per
dimension), optionally projects them onto `pca_components` principal components, and computes
each point's distance to its k-th nearest neighbour, k = `min_samples` counting the point
itself (exactly DBSCAN's core-point test). Sorted, those distances form the k-distance curve;
unless the caller sets `eps`, eps is the curve's knee, found with the Kneedle rule (the point
farthest below the chord from the first to the last point of the normalised curve). DBSCAN then
labels every point with a cluster (0, 1, ...) or -1 for noise, and noise is what gets flagged.

The anomaly score is the k-distance divided by eps: below 1 a point is a core point, around 1 it
sits on a cluster's edge, and the larger it is the more isolated the photo. It is continuous, so
a review queue can be ordered by it, flagged or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import DBSCAN
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

# The smallest eps DBSCAN gets (it refuses 0; identical photos have k-distance 0).
MIN_EPS = 1e-6


@dataclass(frozen=True)
class ClusterResult:
    labels: np.ndarray  # int, -1 = noise
    flagged: np.ndarray  # bool, = noise
    scores: np.ndarray  # float, k-distance / eps
    eps: float
    eps_source: str  # "knee" or "given"
    min_samples: int
    k_distances: np.ndarray  # sorted ascending: the k-distance curve
    knee_index: int | None  # position of eps on the curve when it came from the knee
    projection: np.ndarray  # (n, 2): the first two principal components, for plotting
    dims: int  # dimensions DBSCAN saw (after PCA, if any)

    @property
    def clusters(self) -> int:
        return len(set(self.labels.tolist()) - {-1})

    @property
    def noise(self) -> int:
        return int(self.flagged.sum())


def find_knee(curve: np.ndarray) -> int:
    """Index of the knee of an increasing, convex curve (Kneedle: max distance below the chord).

    Both axes are scaled to [0, 1]; the knee is where `x - y` is largest, i.e. the point farthest
    below the straight line from the first to the last point. A straight or flat curve has no
    knee and gives its last index (so eps takes in every point).
    """
    y = np.asarray(curve, dtype=np.float64)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError("a knee needs a one-dimensional, non-empty curve")
    if len(y) < 3:
        return len(y) - 1
    y = np.sort(y)
    span = y[-1] - y[0]
    if span <= 0:
        return len(y) - 1
    x = np.linspace(0.0, 1.0, len(y))
    difference = x - (y - y[0]) / span
    best = int(np.argmax(difference))
    if difference[best] <= 1e-9:  # on or above the chord everywhere: no knee
        return len(y) - 1
    return best


def k_distances(points: np.ndarray, k: int) -> np.ndarray:
    """Each point's distance to its k-th nearest neighbour, counting itself as the first."""
    k = min(k, len(points))
    distances, _ = NearestNeighbors(n_neighbors=k).fit(points).kneighbors(points)
    return distances[:, k - 1]


def cluster(
    features: np.ndarray,
    *,
    min_samples: int = 5,
    eps: float | None = None,
    pca_components: int | None = None,
) -> ClusterResult:
    """DBSCAN over one species' feature rows; see the module docstring."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError("features must be a non-empty 2-D array")
    n = len(features)
    if min_samples < 2:
        raise ValueError(f"min_samples must be at least 2, got {min_samples}")
    if n <= min_samples:
        raise ValueError(f"{n} images are too few for min_samples={min_samples}")
    if eps is not None and not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")

    points = StandardScaler().fit_transform(features)
    if pca_components is not None:
        if not 1 <= pca_components <= min(n, features.shape[1]):
            raise ValueError(
                f"pca_components must be between 1 and {min(n, features.shape[1])} here, "
                f"got {pca_components}"
            )
        points = PCA(n_components=pca_components, random_state=0).fit_transform(points)
    kdist = k_distances(points, min_samples)
    curve = np.sort(kdist)
    knee: int | None = None
    if eps is None:
        knee = find_knee(curve)
        chosen, source = max(float(curve[knee]), MIN_EPS), "knee"
    else:
        chosen, source = float(eps), "given"
    labels = DBSCAN(eps=chosen, min_samples=min_samples).fit_predict(points)
    return ClusterResult(
        labels=labels.astype(np.int64),
        flagged=labels == -1,
        scores=kdist / chosen,
        eps=chosen,
        eps_source=source,
        min_samples=min_samples,
        k_distances=curve,
        knee_index=knee,
        projection=project_2d(points),
        dims=points.shape[1],
    )


def project_2d(points: np.ndarray) -> np.ndarray:
    """The first two principal components (zero-padded when there are fewer)."""
    out = np.zeros((len(points), 2))
    components = min(2, points.shape[1], len(points))
    if components and len(points) > 1:
        out[:, :components] = PCA(n_components=components, random_state=0).fit_transform(points)
    return out


def downsample_curve(curve: np.ndarray, limit: int = 200) -> list[list[float]]:
    """At most `limit` [index, value] pairs of a curve, first and last always kept."""
    if len(curve) <= limit:
        idx = np.arange(len(curve))
    else:
        idx = np.unique(np.linspace(0, len(curve) - 1, limit).round().astype(np.int64))
    return [[int(i), round(float(curve[i]), 5)] for i in idx]

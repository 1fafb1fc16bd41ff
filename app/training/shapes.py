"""Generated segmentation data: filled circles, squares and triangles on noisy backgrounds, with
a mask per shape class (0 background, 1 circle, 2 square, 3 triangle). Deterministic by seed;
the defaults of ``max_shapes`` and ``noise`` reproduce the images generated before they existed."""

import torch

SHAPE_CLASSES = ("background", "circle", "square", "triangle")


def _triangle(xx: torch.Tensor, yy: torch.Tensor, cx: float, cy: float, r: float) -> torch.Tensor:
    """Inside an upward triangle of circumradius ``r`` around (cx, cy): three half-planes."""
    top, left, right = (cx, cy - r), (cx - 0.87 * r, cy + 0.5 * r), (cx + 0.87 * r, cy + 0.5 * r)

    def side(a: tuple[float, float], b: tuple[float, float]) -> torch.Tensor:
        return (b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0])

    s1, s2, s3 = side(top, left), side(left, right), side(right, top)
    return ((s1 <= 0) & (s2 <= 0) & (s3 <= 0)) | ((s1 >= 0) & (s2 >= 0) & (s3 >= 0))


def make_shapes(
    n: int, image_size: int = 64, seed: int = 0, *, max_shapes: int = 3, noise: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (float32, [n, 3, H, W], roughly zero-mean) and masks (int64, [n, H, W]):
    1 to ``max_shapes`` shapes per image on a background of pixel noise ``noise``."""
    g = torch.Generator().manual_seed(seed)
    side = image_size
    yy, xx = torch.meshgrid(torch.arange(side, dtype=torch.float32),
                            torch.arange(side, dtype=torch.float32), indexing="ij")  # fmt: skip
    images = torch.empty(n, 3, side, side)
    masks = torch.zeros(n, side, side, dtype=torch.int64)
    for i in range(n):
        base = torch.rand(3, 1, 1, generator=g)
        image = base + noise * torch.randn(3, side, side, generator=g)
        for _ in range(int(torch.randint(1, max_shapes + 1, (1,), generator=g))):
            kind = int(torch.randint(1, 4, (1,), generator=g))
            r = float(torch.empty(1).uniform_(0.08, 0.2, generator=g)) * side
            cx, cy = (float(v) for v in torch.empty(2).uniform_(r, side - r, generator=g))
            if kind == 1:
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
            elif kind == 2:
                inside = ((xx - cx).abs() <= r * 0.8) & ((yy - cy).abs() <= r * 0.8)
            else:
                inside = _triangle(xx, yy, cx, cy, r)
            colour = torch.rand(3, 1, 1, generator=g)
            image = torch.where(
                inside, colour + 0.05 * torch.randn(3, side, side, generator=g), image
            )
            masks[i][inside] = kind
        images[i] = image
    return (images - 0.5) / 0.3, masks

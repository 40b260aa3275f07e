"""What the reference steps share."""



def lerp(start, end, weight):
    """torch.lerp: ``start + w*(end-start)`` for w < 0.5, else ``end - (end-start)*(1-w)``."""
    weight = start.dtype.type(weight)
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


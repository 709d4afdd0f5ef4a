"""Module: registers Parameters and sub-modules set as attributes, as torch.nn.Module does."""
from ..tensor import Parameter


class Module:
    def __setattr__(self, name, value):
        if isinstance(value, Parameter) and value.name is None:
            value.name = name
        object.__setattr__(self, name, value)

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs in the order they were set, sub-modules included."""
        seen = set()
        for name, value in vars(self).items():
            if isinstance(value, Parameter) and value not in seen:
                seen.add(value)
                yield prefix + name, value
            elif isinstance(value, Module):
                for sub, p in value.named_parameters(prefix + name + "."):
                    if p not in seen:
                        seen.add(p)
                        yield sub, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

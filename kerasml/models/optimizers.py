"""`ParameterGroupOptimizer`: one Keras optimizer per group of variables.

Models train disjoint groups of variables from one forward pass, each with its
own optimizer: `kerasml.models.MetricModel` the backbone + projector and, when
its loss has trainable parameters (proxies, class weights), those at
``lr_multiplier`` times the rate; `kerasml.hdml.HDMLModel` adds HDML's generator
and classifier (the authors: Adam at 7e-5 for backbone + projector, 1e-2 for the
generator, 1e-3 for the classifier). Keras' ``fit`` drives a single
``model.optimizer`` on every backend (TensorFlow and PyTorch call ``apply``,
JAX calls ``stateless_apply``), so this optimizer holds the group optimizers
and hands each one its own variables and gradients. The updates are exactly
those of the separate optimizers.
"""

import keras


@keras.saving.register_keras_serializable(package="kerasml")
class ParameterGroupOptimizer(keras.optimizers.Optimizer):
    """Dispatches each variable's gradient to the optimizer of its group.

    A variable belongs to the first group one of whose ``prefixes`` starts its
    ``variable.path`` (e.g. ``"hdml_generator/"``), else to ``default_group``.

    The group optimizers are in ``group_optimizers``; ``learning_rate`` is the
    default group's.

    Args:
        optimizers: dict ``{group name: keras.optimizers.Optimizer}`` (or its
            serialized config / identifier, e.g. ``"adam"``).
        prefixes: dict ``{group name: [path prefix, ...]}``; groups without an
            entry only receive variables through ``default_group``.
        default_group: group of the variables that match no prefix.
        name: name of the optimizer.

    Example:

    >>> import keras, kerasml
    >>> opt = kerasml.models.ParameterGroupOptimizer(
    ...     {"metric": keras.optimizers.Adam(7e-5), "head": keras.optimizers.SGD(0.1)},
    ...     prefixes={"head": ["head/"]}, default_group="metric")
    >>> sorted(opt.group_optimizers)
    ['head', 'metric']
    """

    def __init__(self, optimizers, prefixes=None, default_group=None, name="parameter_group_optimizer", **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        if not optimizers:
            raise ValueError("Invalid value for argument `optimizers`. Expected a non-empty dict. Received: {}")
        self.group_optimizers = {group: keras.optimizers.get(opt) for group, opt in optimizers.items()}
        for group, opt in self.group_optimizers.items():
            opt.name = f"{name}_{group}"
        self.prefixes = {group: list(p) for group, p in (prefixes or {}).items()}
        unknown = sorted(set(self.prefixes) - set(self.group_optimizers))
        if unknown:
            raise ValueError(f"Invalid value for argument `prefixes`: groups {unknown} have no optimizer.")
        self.default_group = default_group or next(iter(self.group_optimizers))
        if self.default_group not in self.group_optimizers:
            raise ValueError(
                f"Invalid value for argument `default_group`. Expected one of {sorted(self.group_optimizers)}. "
                f"Received: default_group={self.default_group!r}"
            )

    @property
    def learning_rate(self):
        """The learning rate of ``default_group`` (what logs and callbacks see)."""
        return self.group_optimizers[self.default_group].learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.group_optimizers[self.default_group].learning_rate = value

    def group_of(self, variable):
        """The group name of ``variable`` (by its path)."""
        path = variable.path
        for group, prefixes in self.prefixes.items():
            if any(path.startswith(prefix) for prefix in prefixes):
                return group
        return self.default_group

    def _split(self, grads, variables):
        groups = {group: ([], []) for group in self.group_optimizers}
        for grad, variable in zip(grads, variables):
            group = groups[self.group_of(variable)]
            group[0].append(grad)
            group[1].append(variable)
        return groups

    def build(self, variables):
        super().build(variables)
        for group, (_, group_variables) in self._split([None] * len(variables), variables).items():
            self.group_optimizers[group].build(group_variables)
            self.group_optimizers[group].built = True

    @property
    def variables(self):
        own = self._variables[:]
        return own + [v for opt in self.group_optimizers.values() for v in opt.variables]

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                with keras.name_scope(self.name, caller=self):
                    self.build(trainable_variables)
                self.built = True
        for group, (group_grads, group_variables) in self._split(list(grads), trainable_variables).items():
            if group_variables:
                self.group_optimizers[group].apply(group_grads, group_variables)
        self._iterations.assign_add(1)

    def get_config(self):
        return {
            "name": self.name,
            "optimizers": {g: keras.optimizers.serialize(opt) for g, opt in self.group_optimizers.items()},
            "prefixes": self.prefixes,
            "default_group": self.default_group,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizers"] = {
            g: keras.optimizers.deserialize(c, custom_objects=custom_objects) for g, c in config["optimizers"].items()
        }
        return cls(**config)

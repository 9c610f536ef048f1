"""Problems by name: ``register_problem("mine", make_problem)``, then ``config={"user_problem": "mine", ...}``.

A factory is a callable with no arguments that returns a :class:`~fds_tune.spec.ProblemSpec`.
``config["user_problem"]`` (every trainable's config, ``fds-tune compare --problem``) resolves, in order:

1. a name registered in this process;
2. a name registered in the driver and published to the Ray cluster;
3. ``"module:function"``: the factory imported (it must be importable on every node; no registry needed).

How a registration reaches the Ray workers, on every node: :func:`register_problem` called in a
process connected to Ray (after ``ray.init()``) publishes the factory, pickled with Ray's
cloudpickle (by value for a function of the driver's script, by reference for an importable one),
to one named Ray actor of the job (:data:`ACTOR_NAME` in namespace :data:`ACTOR_NAMESPACE`,
zero CPUs, gone with the driver).  A worker that does not know a name asks that actor once and
keeps the answer.  A registration made before ``ray.init()`` is published by the next
:func:`register_problem` or :func:`publish_problems` call after it.
"""
from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable

from .validation import check, fail

__all__ = ["register_problem", "resolve_problem", "publish_problems", "registered_problems", "ACTOR_NAME", "ACTOR_NAMESPACE"]

ACTOR_NAME = "problems"
ACTOR_NAMESPACE = "fds_tune"
Factory = Callable[[], object] | str
_REGISTRY: dict[str, Factory] = {}
_PUBLISHED: dict[str, tuple[str, str]] = {}  # name -> the (node, job) of the Ray session it was published to
_HANDLES: list = []  # the driver holds the registry actor's handle: Ray ends an actor nobody holds


def register_problem(name: str, factory: Factory) -> None:
    """Register ``factory`` (a callable returning a ProblemSpec, or ``"module:function"``) as ``name``.

    Connected to Ray, the registration is published to the cluster, so that trials on every node
    resolve ``name`` (see the module docstring)."""
    check("name", name, isinstance(name, str) and bool(name) and ":" not in name, "a non-empty string without ':' (':' marks 'module:function')")
    ok = callable(factory) or (isinstance(factory, str) and ":" in factory)
    check("factory", factory, ok, "a callable returning a ProblemSpec, or 'module:function'")
    _REGISTRY[name] = factory
    _PUBLISHED.pop(name, None)
    publish_problems()


def registered_problems() -> list[str]:
    """The names registered in this process."""
    return sorted(_REGISTRY)


def publish_problems() -> None:
    """Publish this process's registrations to the Ray cluster it is connected to (nothing without Ray)."""
    if not _REGISTRY or not _ray_connected():
        return
    from ray import cloudpickle, get

    session = _session()
    pending = [n for n in _REGISTRY if _PUBLISHED.get(n) != session]  # a new Ray session knows none of them
    if pending:
        actor = _registry_actor()
        get([actor.put.remote(n, cloudpickle.dumps(_REGISTRY[n])) for n in pending])
        _PUBLISHED.update(dict.fromkeys(pending, session))


def resolve_problem(name: str):
    """The :class:`~fds_tune.spec.ProblemSpec` that ``name`` (registered, or ``"module:function"``) makes."""
    from .spec import ProblemSpec

    factory = _REGISTRY.get(name)
    if factory is None and _ray_connected():
        factory = _from_cluster(name)
    if factory is None:
        if ":" not in name:
            known = registered_problems()
            fail(
                "user_problem", name,
                f"a registered problem name (registered here: {known}; call fds_tune.register_problem(name, factory) "
                "after ray.init() in the driver) or 'module:function'",
            )
        factory = name
    if isinstance(factory, str):
        factory = _import(factory)
    spec = factory()
    check(f"user_problem {name!r}", type(spec).__name__, isinstance(spec, ProblemSpec), "a factory returning a fds_tune.ProblemSpec")
    return spec


def _import(path: str) -> Callable:
    module, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        fail("user_problem", path, f"'module:function' importable here ({type(err).__name__}: {err})")
    check("user_problem", path, callable(obj), "'module:function' naming a callable")
    return obj


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")  # Ray is never imported here for a process that does not use it
    return ray is not None and ray.is_initialized()


def _session() -> tuple[str, str]:
    from ray import get_runtime_context

    context = get_runtime_context()
    return context.get_node_id(), context.get_job_id()


def _from_cluster(name: str):
    from ray import cloudpickle, get, get_actor

    try:
        actor = get_actor(ACTOR_NAME, namespace=ACTOR_NAMESPACE)
    except ValueError:  # no registration was ever published
        return None
    blob = get(actor.get.remote(name))
    if blob is None:
        return None
    factory = cloudpickle.loads(blob)
    _REGISTRY[name] = factory
    _PUBLISHED[name] = _session()
    return factory


@functools.cache
def _actor_class():
    import ray

    @ray.remote(num_cpus=0)
    class ProblemRegistry:
        """The cluster's registrations: name -> pickled factory."""

        def __init__(self):
            self.factories: dict[str, bytes] = {}

        def put(self, name: str, blob: bytes) -> None:
            self.factories[name] = blob

        def get(self, name: str) -> bytes | None:
            return self.factories.get(name)

    return ProblemRegistry


def _registry_actor():
    actor = _actor_class().options(name=ACTOR_NAME, namespace=ACTOR_NAMESPACE, get_if_exists=True).remote()
    _HANDLES[:] = [actor]
    return actor

"""Layout stage: text -> validated, repaired bounding-box layout."""

from scenewright.layout.schema import GLIGEN_MAX_OBJECTS, Layout, LayoutError, LayoutObject
from scenewright.layout.spec import ObjectSpec, PromptSpec, RelationSpec

__all__ = ["GLIGEN_MAX_OBJECTS", "Layout", "LayoutError", "LayoutObject", "ObjectSpec", "PromptSpec", "RelationSpec"]

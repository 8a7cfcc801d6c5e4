"""Recipes (synth.recipe): the one parser of the method syntax, the one option precedence, and the agent's remedies."""

from __future__ import annotations

import pytest

from scenewright.agent.loop import boosted_scale, composed, new_seed, with_extra_methods
from scenewright.errors import CLIError
from scenewright.synth.recipe import ENGINE_DEFAULTS, Recipe, parse_method_names, parse_options, parse_recipes, resolve_methods, split_options


def test_the_bench_syntax_parses_into_recipes_with_the_common_settings():
    none, composed_car = parse_recipes("none,compose+car+sar", seed=3, steps=7)
    assert (none.name, none.methods, none.guided) == ("none", ("none",), False)
    assert (composed_car.name, composed_car.methods, composed_car.compose) == ("compose+car+sar", ("car", "sar"), True)
    assert composed_car.seed == 3 and composed_car.steps == 7
    kwargs = composed_car.generate_kwargs()
    assert kwargs["composition"] is True and kwargs["methods"] == ["car", "sar"] and kwargs["num_inference_steps"] == 7
    with pytest.raises(CLIError, match="unknown method"):
        parse_recipes("car+nope")
    assert parse_method_names("car, sar") == ["car", "sar"] and parse_options(["a=[1,2]", "b=soft"]) == {"a": [1, 2], "b": "soft"}


def test_options_go_to_the_recipes_that_take_them_and_precedence_is_resolved_once():
    recipes = parse_recipes("none,attend_excite,car+sar")
    split = split_options(recipes, {"car_res": [16, 16], "scale_factor": 5})
    assert split == {"none": {"scale_factor": 5}, "attend_excite": {"scale_factor": 5}, "car+sar": {"car_res": [16, 16], "scale_factor": 5}}
    with pytest.raises(ValueError, match="no method of --methods takes it"):
        split_options(recipes, {"nonsense": 1})
    # user > the first method listed that sets an engine option > A&E's defaults
    assert Recipe(("car", "sar")).engine_options()["scale_factor"] == resolve_methods(["car", "sar"], {})[1]["scale_factor"]
    assert Recipe(("car",), {"scale_factor": 3}).engine_options()["scale_factor"] == 3
    assert Recipe().engine_options() == {**ENGINE_DEFAULTS, "thresholds": {0: 0.05, 10: 0.5, 20: 0.8}}
    with pytest.raises(ValueError, match="'none'"):
        Recipe(("none", "car"))
    with pytest.raises(ValueError, match="steps"):
        Recipe(steps=0)


def test_remedies_are_functions_from_recipe_to_recipe():
    recipe = Recipe(("car",), {"car_res": [16, 16]}, seed=4)
    assert new_seed(recipe).seed == 5 and new_seed(recipe).methods == recipe.methods
    blended = composed(recipe, 2.0)
    assert blended.compose and blended.spatial_temporal == 2.0 and blended.name == "compose+spatial_temporal+car"
    assert composed(recipe, 0.0).spatial_temporal is None
    boosted = boosted_scale(recipe, 2.0)
    assert boosted.options["scale_factor"] == 2 * recipe.engine_options()["scale_factor"]
    assert boosted.options["car_res"] == [16, 16] and "scale_factor" not in recipe.options  # recipes are values
    assert with_extra_methods(Recipe(), ["car"]).methods == ("car",)
    assert with_extra_methods(recipe, ["car", "sar"]).methods == ("car", "sar")

"""Offline prompt parser: free text -> :class:`scenewright.layout.spec.PromptSpec`, with no model.

A small rule-based noun-phrase chunker over a vocabulary of object kinds (the 80 COCO
classes, their common synonyms and everyday objects). It reads what layout benchmarks
ask for: counts, attributes, sizes, pairwise and absolute positions, negation and the
scene. It never raises on text; what it cannot place is reported in ``PromptSpec.notes``.

Conventions (documented choices, not benchmark lookups):

- Vague quantities get fixed counts: "a few"/"several"/"some"/"multiple" + plural -> 3,
  "a group/herd/row of" -> 4, "many"/"lots of"/"numerous" -> 6, a bare plural ("apples") -> 2.
  A count comparison ("the number of X is more than that of Y") resolves a vague count so
  that the comparison holds (NSR-1K, Feng et al. 2023, phrases its comparison prompts so).
- Following LMD (Lian et al. 2023), style prefixes ("A realistic photo of") and places
  ("on a beach", "in a kitchen") are the background, never objects; furniture ("a sofa",
  "a table") is an object; "without X" / "no X" puts X in ``negative`` and not in ``objects``.
- "X on Y" (Y an object) is read as X above Y; where Y is a supporting surface
  (:data:`SUPPORT_KINDS`: a sofa, a table, a bed, ...) the offline planner rests X on Y
  (X's bottom edge inside Y's upper part). "in front of"/"behind" have no 2-D meaning
  and are noted, not guessed.
- A trailing support phrase supports everything before it: when the sentence ends with
  "on/in/upon a Y" (Y in :data:`SUPPORT_KINDS`) after two or more object groups, every earlier
  group of the sentence is "above" Y, not only the last one ("two cats to the left of a dog on
  a sofa": the cats and the dog are all on the sofa). Attaching Y to the last object alone would
  put the cats beside a sofa the dog sits on; making Y the background (the issue's own reading)
  would drop an object that NSR-1K's ground truth boxes ("a cat lays down next to a laptop on a
  bed" boxes the bed), so Y stays an object that supports the whole row. A place noun ("on a
  beach", "in a kitchen") stays the background as before.
- "in the sky" / "in the air" is a region, not a background: the subject is "at" the top
  (:data:`REGION_SCENES`), and a relation after it still belongs to the subject ("five balloons
  in the sky above a house").
- "X between two Ys" (one plural reference) is ``between`` with ``references=(Y, Y)``: X lies
  between the instances of Y (see :func:`scenewright.layout.relations.relation_holds`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

from scenewright.layout.spec import ObjectSpec, PromptSpec, RelationSpec

# ----------------------------------------------------------------------------- vocabulary

#: The 80 COCO detection classes (Lin et al. 2014), the kinds the benchmarks draw from.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

COMMON_OBJECTS = (
    # people
    "man", "woman", "boy", "girl", "child", "kid", "baby", "lady", "guy", "player", "people",
    "astronaut", "chef", "doctor", "soldier", "robot", "skier", "surfer", "policeman", "king", "queen",
    "hair dryer", "cellphone", "phone", "smartphone", "mobile phone", "television", "monitor",
    "computer", "computer mouse", "remote control", "sofa", "table", "desk", "coffee table",
    "stool", "armchair", "lamp", "shelf", "bookshelf", "cabinet", "drawer", "dresser", "wardrobe",
    "pillow", "blanket", "rug", "carpet", "towel", "curtain", "mirror", "window", "door", "fridge",
    "stove", "kettle", "teapot", "pot", "pan", "plate", "dish", "mug", "glass", "jar", "basket",
    "bucket", "box", "bag", "purse", "wallet", "suitcase", "candle", "vase", "flower", "rose",
    "tulip", "sunflower", "daisy", "plant", "tree", "palm tree", "bush", "cactus", "leaf",
    "rock", "stone", "log", "fence", "bridge", "house", "building", "tower", "castle", "church",
    "tent", "statue", "fountain", "lighthouse", "windmill", "street light", "street sign", "sign",
    "mailbox", "hydrant", "traffic cone", "cone", "pole", "flag", "balloon", "ball", "football",
    "soccer ball", "basketball", "baseball", "tennis ball", "golf ball", "beach ball", "racket",
    "bat", "glove", "helmet", "hat", "cap", "crown", "shoe", "boot", "sock", "shirt", "t shirt",
    "dress", "skirt", "jacket", "coat", "scarf", "sweater", "pants", "jeans", "shorts", "sunglasses",
    "glasses", "watch", "necklace", "ring", "bracelet", "earring", "guitar", "piano", "violin",
    "drum", "trumpet", "microphone", "camera", "pen", "pencil", "notebook", "paper", "envelope",
    "key", "lock", "coin", "gift", "present", "toy", "doll", "puppet", "sled", "wheel", "tire",
    # vehicles
    "bike", "motorbike", "scooter", "van", "taxi", "ambulance", "tractor", "plane", "jet",
    "helicopter", "ship", "sailboat", "yacht", "canoe", "kayak", "rocket", "spaceship", "cart",
    "wagon", "carriage", "bulldozer", "fire truck", "school bus", "pickup truck", "police car",
    # animals
    "lion", "tiger", "leopard", "cheetah", "wolf", "fox", "deer", "moose", "rabbit", "bunny",
    "squirrel", "monkey", "gorilla", "panda", "koala", "kangaroo", "camel", "pig", "goat", "lamb",
    "donkey", "pony", "chicken", "rooster", "duck", "goose", "swan", "owl", "eagle", "parrot",
    "penguin", "flamingo", "pigeon", "crow", "frog", "turtle", "tortoise", "snake", "lizard",
    "crocodile", "dinosaur", "dragon", "unicorn", "fish", "goldfish", "shark", "whale", "dolphin",
    "octopus", "crab", "lobster", "butterfly", "bee", "ladybug", "spider", "ant", "snail", "hamster",
    "puppy", "kitten", "polar bear", "hippo", "rhino", "ox", "bull", "calf", "sheepdog", "hen",
    # food
    "lemon", "lime", "strawberry", "cherry", "grape", "watermelon", "melon", "pear", "peach",
    "pineapple", "mango", "plum", "kiwi", "coconut", "avocado", "tomato", "potato", "onion",
    "pepper", "cucumber", "pumpkin", "corn", "mushroom", "egg", "bread", "loaf", "bagel",
    "croissant", "cookie", "muffin", "cupcake", "pie", "doughnut", "burger", "hamburger",
    "sausage", "steak", "taco", "burrito", "noodle", "cheese", "ice cream", "candy", "lollipop",
    "wine bottle", "beer", "teacup", "coffee cup", "coffee mug", "slice",
    # flat shapes (the embedded shapes world's kinds, eval/shapes/world.py, and their neighbours)
    "circle", "square", "triangle", "star", "rectangle", "heart", "diamond", "hexagon", "oval",
)  # fmt: skip

#: Places and surfaces that are the scene (the background), never boxed objects (LMD convention).
SCENE_NOUNS = frozenset(
    (
        "scene", "beach", "kitchen", "living room", "bedroom", "bathroom", "dining room", "office",
        "classroom", "restaurant", "cafe", "library", "street", "road", "highway", "sidewalk",
        "park", "field", "meadow", "forest", "woods", "jungle", "desert", "snow", "grass", "lawn",
        "sky", "ocean", "sea", "lake", "river", "pond", "water", "city", "town", "village", "garden",
        "yard", "backyard", "mountain", "hill", "valley", "countryside", "landscape", "farm",
        "station", "train station", "airport", "runway", "harbor", "dock", "pier", "shore", "coast",
        "room", "hallway", "hall", "market", "store", "shop", "stadium", "court", "playground",
        "space", "outer space", "universe", "night", "sunset", "sunrise", "wall", "floor", "ground",
        "ceiling", "corner", "background", "foreground", "distance", "area", "zoo",
        "barn", "cave", "island", "dirt", "sand", "mud", "rain", "fog", "air", "world", "universe",
        "winter", "summer", "autumn", "daytime", "nighttime", "weather", "sun", "sunlight", "sunshine", "shade", "shadow", "moonlight", "counter", "countertop", "kitchen counter", "window sill", "windowsill", "surface", "setting",
        "environment", "interior", "downtown", "alley", "tunnel", "track", "tracks", "railway",
    )
)  # fmt: skip

#: Kinds that other objects rest on: "X on Y" puts X's bottom edge on Y's upper part (offline planner).
SUPPORT_KINDS = frozenset(
    ("sofa", "couch", "bed", "table", "dining table", "coffee table", "desk", "bench", "chair", "armchair",
     "stool", "shelf", "bookshelf", "cabinet", "dresser", "rug", "carpet", "blanket", "towel", "plate",
     "dish", "tray", "pillow", "rock", "log", "box", "suitcase", "bridge")
)  # fmt: skip

#: Scene nouns that name a part of the picture, not its background: the subject is "at" that region.
REGION_SCENES = {"sky": "top", "air": "top"}

_ROOMS = frozenset(
    ("kitchen", "living room", "bedroom", "bathroom", "dining room", "office", "classroom", "restaurant",
     "cafe", "library", "room", "hallway", "hall", "store", "shop", "station", "train station", "airport")
)  # fmt: skip
_LOCATIVES = frozenset(
    ("in", "on", "at", "into", "onto", "inside", "within", "across", "over", "under", "near", "by", "through",
     "along", "around", "against", "from", "of", "above", "below", "beneath", "behind", "beside", "toward",
     "towards", "upon", "underneath", "throughout", "outside", "overlooking")
)  # fmt: skip

#: Nouns about the picture itself ("in the image"): neither objects nor scene.
META_NOUNS = frozenset(
    ("image", "picture", "photo", "photograph", "pic", "shot", "view", "close up", "closeup", "frame",
     "illustration", "drawing", "rendering", "render", "sketch", "depiction", "scenery", "number",
     "side", "top", "bottom", "left", "right", "middle", "center", "centre", "front", "back", "row",
     "line", "group", "pair", "couple", "bunch", "lot", "lots", "variety", "set", "other", "thing",
     "things", "something", "object", "objects", "one", "ones", "kind", "type", "sort", "part", "half",
     "edge", "way", "time", "day", "color", "colour", "shape", "size")
)  # fmt: skip

#: Multiword names of one COCO kind -> the COCO name ('microwave oven' is a microwave).
KIND_ALIASES = {
    "microwave oven": "microwave", "tv set": "tv", "tv monitor": "tv", "television set": "television",
    "laptop computer": "laptop", "computer mouse": "mouse", "cellphone": "cell phone", "mobile phone": "cell phone",
    "hair dryer": "hair drier", "remote control": "remote", "doughnut": "donut", "motorbike": "motorcycle",
    "aeroplane": "airplane", "sofa bed": "couch", "teddy": "teddy bear", "wineglass": "wine glass",
}  # fmt: skip

KINDS: frozenset[str] = frozenset(COCO_CLASSES) | frozenset(COMMON_OBJECTS) | frozenset(KIND_ALIASES)
_KIND_TUPLES = frozenset(tuple(k.split()) for k in KINDS | SCENE_NOUNS | META_NOUNS)
_MAX_KIND_WORDS = 3

COLORS = frozenset(
    ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray",
     "grey", "silver", "gold", "golden", "beige", "violet", "cyan", "magenta", "turquoise", "navy",
     "teal", "maroon", "crimson", "tan", "ivory", "indigo", "lavender", "khaki", "blond", "blonde",
     "colorful", "colourful", "multicolored", "striped", "spotted", "checkered", "dark", "bright")
)  # fmt: skip
MATERIALS = frozenset(
    ("wooden", "wood", "metal", "metallic", "plastic", "glass", "leather", "stone", "brick", "ceramic",
     "paper", "steel", "iron", "marble", "concrete", "fabric", "woolen", "wool", "cotton", "silk",
     "rubber", "bamboo", "crystal", "velvet", "denim", "porcelain", "clay", "straw", "wicker", "furry",
     "fluffy", "knitted", "stuffed")
)  # fmt: skip
#: Adjectives that are never the head of a noun phrase.
_ADJECTIVES = frozenset(
    ("old", "new", "young", "happy", "sad", "cute", "empty", "full", "open", "closed", "hot", "cold", "warm",
     "wet", "dry", "dirty", "clean", "pretty", "beautiful", "sunny", "snowy", "rainy", "cloudy", "lone",
     "other", "same", "different", "first", "second", "third", "last", "next", "few", "many", "much",
     "long", "short", "high", "low", "fat", "thin", "fresh", "ripe", "cooked", "raw", "sweet", "nice",
     "real", "fake", "toy", "baby", "adult", "male", "female", "wild", "tame", "busy", "quiet", "calm",
     "light", "heavy", "shiny", "fancy", "plain", "modern", "antique", "vintage", "retro", "huge", "giant",
     "asleep", "awake", "alone", "together", "several", "various", "whole", "half", "large", "big", "small",
     "little", "tiny", "tall", "round", "square", "flat", "sharp", "soft", "hard", "smooth", "rough", "odd",
     "up", "down", "already", "still", "again", "away", "outside", "inside", "ready", "silly", "funny",
     "single", "double", "triple", "messy", "neat", "tidy", "crowded", "lonely", "lovely", "ugly", "scary",
     "hidden", "broken", "frozen", "fallen", "eaten", "taken", "written", "stolen", "sunken", "woven", "rotten",
     "swollen", "shaken", "forgotten", "chosen", "driven", "cut", "made", "sold", "built", "worn", "torn")
) | COLORS | MATERIALS
_ADJECTIVE_SUFFIXES = ("ish", "ful", "ous", "less", "able", "ible", "ing", "ly")

#: Size adjectives -> the :data:`scenewright.layout.spec.SizeWord` they mean.
SIZE_WORDS = {
    "large": "large", "big": "large", "giant": "huge", "huge": "huge", "enormous": "huge",
    "massive": "huge", "gigantic": "huge", "small": "small", "little": "small", "tiny": "tiny",
    "miniature": "tiny", "mini": "tiny", "tall": "tall",
}  # fmt: skip

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "dozen": 12, "both": 2, "single": 1,
}  # fmt: skip

#: Counts chosen for vague quantities (see the module docstring).
VAGUE_COUNTS = {"few": 3, "several": 3, "some": 3, "multiple": 3, "group": 4, "many": 6}
BARE_PLURAL_COUNT = 2

# Multiword quantifiers, matched before chunking because "of" otherwise ends a phrase.
_GROUP_HEADS = (
    "group", "herd", "flock", "bunch", "pack", "team", "crowd", "collection", "set", "pile",
    "stack", "number", "variety", "cluster", "fleet", "family", "pod", "swarm", "school", "couple",
    "pair", "row", "line", "lot", "dozen",
)  # fmt: skip
_DETERMINERS = {
    "a": 1, "an": 1, "another": 1, "this": 1, "that": None, "the": None, "these": None, "those": None,
    "his": None, "her": None, "their": None, "its": None, "my": None, "your": None, "our": None,
    "each": None, "every": None,
}  # fmt: skip
_VAGUE_WORDS = {"several": "several", "some": "some", "many": "many", "few": "few", "multiple": "multiple",
                "numerous": "many", "various": "several"}  # fmt: skip

_PREPOSITIONS = (
    "of", "in", "on", "at", "to", "from", "with", "without", "by", "near", "next", "beside", "besides",
    "above", "below", "under", "over", "beneath", "underneath", "behind", "between", "among", "amongst",
    "into", "onto", "upon", "through", "across", "along", "alongside", "around", "against", "inside",
    "outside", "for", "atop", "within", "toward", "towards", "up", "down", "off", "out", "about",
    "like", "than", "as", "after", "before", "during", "while", "until", "via", "per", "close",
)  # fmt: skip
_FUNCTION_WORDS = (
    "and", "or", "but", "nor", "so", "then", "that", "which", "who", "whom", "whose", "where", "when",
    "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "do", "does", "did",
    "it", "they", "them", "he", "she", "him", "we", "us", "you", "i", "me", "there", "here", "what",
    "not", "no", "very", "too", "also", "just", "only", "all", "both", "either", "neither", "more",
    "less", "fewer", "most", "same", "equal", "each", "other", "can", "could", "will", "would",
    "should", "may", "might", "must", "shall", "if", "because", "while", "though", "although",
    "together", "side", "left", "right", "top", "bottom", "middle", "center", "centre", "front",
    "back", "row", "corner", "edge", "upper", "lower", "far", "background", "foreground", "half",
    "bigger", "larger", "smaller", "taller", "shorter", "higher", "lower", "greater", "than", "number",
    "sits", "sit", "sat", "stands", "stand", "stood", "lies", "lie", "lay", "lays", "holds", "hold",
    "held", "looks", "look", "eats", "eat", "wears", "wear", "plays", "play", "rides", "ride", "flies",
    "fly", "hangs", "hang", "hung", "rests", "rest", "waits", "wait", "walks", "walk", "runs", "run",
    "contains", "contain", "shows", "show", "sleeps", "sleep", "carries", "carry", "carried", "seen",
    "appear", "appears", "placed", "located", "positioned", "parked", "stacked", "filled", "covered",
    "made", "topped", "surrounded", "lined", "arranged", "gathered", "stacked", "floats", "float",
    "swims", "swim", "grows", "grow", "stays", "goes", "go", "get", "gets", "got", "lying",
    "takes", "take", "took", "makes", "make", "fills", "fill", "curls", "naps", "nap", "parks", "reflects",
    "stares", "watches", "sniffs", "chews", "drinks", "reads", "jumps", "jump", "leans", "perches",
    "hides", "peeks", "poses", "smiles", "stuck", "nearby", "sees", "see", "eyes", "faces", "points",
    "pulls", "pushes", "lands", "crosses", "waits", "sleeps", "barks", "meows", "travels", "drives",
    "moves", "sails", "flies", "hovers", "feeds", "licks", "bites", "catches", "throws", "kicks", "tries",
    "uses", "needs", "wants", "likes", "loves", "keeps", "seems", "becomes", "remains", "lays", "sets",
)  # fmt: skip
_BOUNDARY_WORDS = frozenset(_PREPOSITIONS) | frozenset(_FUNCTION_WORDS)

#: -ing words that are nouns, not verbs.
_ING_NOUNS = frozenset(
    ("building", "painting", "ceiling", "king", "ring", "string", "wedding", "thing", "clothing",
     "awning", "evening", "morning", "icing", "stuffing", "frosting", "pudding", "dumpling", "earring",
     "swing", "wing", "spring", "dressing", "railing", "sibling", "duckling", "seedling", "ping")
)  # fmt: skip

# ------------------------------------------------------------------------- singularization

_IRREGULAR_PLURALS = {
    "people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child",
    "kids": "kid", "feet": "foot", "teeth": "tooth", "mice": "mouse", "geese": "goose", "oxen": "ox",
    "cacti": "cactus", "fungi": "fungus", "octopi": "octopus", "knives": "knife", "wives": "wife",
    "lives": "life", "leaves": "leaf", "wolves": "wolf", "shelves": "shelf", "calves": "calf",
    "halves": "half", "loaves": "loaf", "scarves": "scarf", "thieves": "thief", "elves": "elf",
    "hooves": "hoof", "lenses": "lens", "dice": "die", "policemen": "policeman", "firemen": "fireman",
    "gentlemen": "gentleman", "ladies": "lady", "buses": "bus", "gases": "gas", "canvases": "canvas",
    "axes": "axe", "pennies": "penny", "radii": "radius", "indices": "index", "matrices": "matrix",
    "phenomena": "phenomenon", "criteria": "criterion", "data": "data", "skis": "skis",
}  # fmt: skip
#: Words whose plural is the same or that only exist as plurals.
_INVARIANT = frozenset(
    ("sheep", "fish", "deer", "moose", "bison", "salmon", "trout", "shrimp", "aircraft", "series",
     "species", "scissors", "pants", "jeans", "shorts", "trousers", "binoculars", "headphones",
     "earphones", "pliers", "tongs", "sunglasses", "goggles", "clothes", "news", "broccoli", "skis",
     "this", "is", "was", "has", "his", "its", "us", "as", "yes", "gas", "bus")
)  # fmt: skip
_PLURALE_TANTUM = frozenset(
    ("scissors", "pants", "jeans", "shorts", "trousers", "binoculars", "headphones", "earphones", "pliers",
     "tongs", "sunglasses", "goggles", "clothes", "skis")
)  # fmt: skip
_OES_TO_O = frozenset(("tomatoes", "potatoes", "heroes", "echoes", "mangoes", "volcanoes", "torpedoes",
                       "dominoes", "mosquitoes", "buffaloes", "flamingoes", "avocadoes"))  # fmt: skip
_IES_TO_IE = frozenset(("cookies", "movies", "pies", "ties", "lies", "brownies", "zombies", "hippies",
                        "rookies", "smoothies", "selfies", "calories", "goalies", "aunties", "dies",
                        "magpies", "collies", "budgies", "hoodies", "beanies", "genies"))  # fmt: skip
_SES_TO_SE = frozenset(("houses", "blouses", "mouses", "causes", "uses", "muses", "cases", "vases",
                        "horses", "roses", "noses", "purses", "nurses", "cheeses", "bases", "phases",
                        "hoses", "poses", "doses", "courses", "verses", "geeses", "warehouses",
                        "greenhouses", "lighthouses", "treehouses", "suitcases", "bookcases",
                        "briefcases", "showcases", "staircases", "pencilcases", "clauses", "pauses",
                        "daises", "tortoises", "porpoises", "lenses", "mooses"))  # fmt: skip


@lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """The singular of an English noun ('geese' -> 'goose', 'benches' -> 'bench'); other words unchanged."""
    w = word.lower()
    if len(w) <= 2 or w in _INVARIANT:
        return w
    if w in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[w]
    # Compounds keep an irregular tail: "policewomen", "grandchildren", "snowmen".
    for plural, single in (("women", "woman"), ("men", "man"), ("children", "child"), ("mice", "mouse"),
                           ("geese", "goose"), ("knives", "knife"), ("people", "person")):  # fmt: skip
        if w.endswith(plural) and len(w) > len(plural) + 2:
            return w[: -len(plural)] + single
    if w.endswith(("ss", "us", "is", "ous", "ics")):
        return w
    if w.endswith("ies"):
        return w[:-1] if (w in _IES_TO_IE or len(w) <= 4) else w[:-3] + "y"
    if w.endswith("ves"):
        return w[:-1]  # gloves, olives, stoves; the f-plurals are in the irregular table
    if w.endswith("oes"):
        return w[:-2] if w in _OES_TO_O else w[:-1]
    if w.endswith("sses") or w.endswith(("xes", "zzes", "ches", "shes")):
        return w[:-2]
    if w.endswith("uses") and w not in _SES_TO_SE:
        return w[:-2]  # buses, cactuses, octopuses, viruses
    if w.endswith("s") and not w.endswith("'s"):
        return w[:-1]
    return w


@lru_cache(maxsize=65536)
def _is_plural(word: str) -> bool:
    w = word.lower()
    if w in ("people", "persons", "men", "women", "children", "mice", "geese", "feet", "teeth", "oxen", "cacti"):
        return True
    if w in _INVARIANT:
        return False
    return singularize(w) != w


# ------------------------------------------------------------------------------- tokens

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_STYLE_RE = re.compile(
    r"^\s*(?:(?:this|it) is |here is |here are |there is |there are )?"
    r"((?:an? |the )?(?:[a-z]+[ -]){0,3}?"
    r"(?:photo|photograph|image|picture|painting|drawing|illustration|rendering|render|view|shot|"
    r"sketch|close[ -]?up|closeup|portrait|snapshot|depiction|cartoon|artwork|pic))"
    r"\s+(?:of|showing|depicting|with|that shows)\s+"
)
_STYLE_MEDIA = frozenset(
    ("a", "an", "the", "photo", "photograph", "image", "picture", "painting", "drawing", "illustration",
     "rendering", "render", "view", "shot", "sketch", "close", "up", "closeup", "close-up", "portrait",
     "snapshot", "depiction", "cartoon", "artwork", "pic")
)  # fmt: skip
_COUNT_CMP_RE = re.compile(
    r"(?:,|;|\band\b|\bwhere\b|\bwhile\b)?\s*the number of ([a-z ]+?) (?:is|are) "
    r"(more|greater|larger|higher|bigger|less|fewer|smaller|lower) than (?:that of |the number of )?(?:the )?([a-z ]+?)"
    r"(?=[,.;!?]|$)"
)


@dataclass
class _Quant:
    """A quantifier such as 'three', 'a pair of', 'a few', 'the same number of'."""

    text: str
    count: int | None = None  # an exact number
    vague: str | None = None  # a key of VAGUE_COUNTS
    determiner: str | None = None  # 'a', 'the', ...
    row: bool = False  # "a row of"
    same_as_previous: bool = False  # "the same number of"
    pair_of: bool = False
    negated: bool = False  # "no", "zero"


@dataclass
class _Phrase:
    """A noun phrase found in the text (token span [start, end))."""

    start: int
    end: int
    name: str
    head_plural: bool
    modifiers: list[str]
    quants: list[_Quant]
    head_word: str
    known: bool
    negated: bool = False
    scene: bool = False
    meta: bool = False
    count: int = 1
    vague: bool = False


def _tokenize(text: str) -> list[str]:
    text = text.lower().replace("’", "'").replace("-", " ").replace("_", " ")
    tokens = []
    for tok in _TOKEN_RE.findall(text):
        if tok.endswith("'s"):
            tok = tok[:-2]  # possessive: "a man's hat" -> "a man hat"
        elif "'" in tok:
            tok = tok.split("'")[0]
        if tok:
            tok = tok.rstrip("'")
            if tok:
                tokens.append(tok)
    return tokens


def _match_quantifier(tokens: list[str], i: int) -> tuple[_Quant, int] | None:
    """A quantifier starting at ``tokens[i]`` and the index after it, or None."""
    t = tokens[i]
    if t not in _QUANT_STARTS and not _is_number(t):
        return None
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    nxt2 = tokens[i + 2] if i + 2 < len(tokens) else ""
    nxt3 = tokens[i + 3] if i + 3 < len(tokens) else ""
    # "the same number of", "an equal number of"
    if t in ("the", "an", "a") and nxt in ("same", "equal") and nxt2 == "number" and nxt3 == "of":
        return _Quant(" ".join(tokens[i : i + 4]), same_as_previous=True, determiner=t), i + 4
    if t in ("a", "an") and nxt in ("few", "couple", "single", "dozen") and nxt2 != "of":
        if nxt == "few":
            return _Quant("a few", vague="few", determiner=t), i + 2
        if nxt == "couple":  # "a couple sitting" is two people; "a couple cats" two cats
            if nxt2 in ("", ",", ".") or nxt2 in _BOUNDARY_WORDS or nxt2 in _QUANT_STARTS:
                return None
            return _Quant("a couple", count=2, determiner=t), i + 2
        return _Quant(f"a {nxt}", count=NUMBER_WORDS[nxt], determiner=t), i + 2
    if t in ("a", "an") and nxt in _GROUP_HEADS and nxt2 == "of":
        quant = _Quant(f"a {nxt} of", determiner=t)
        if nxt in ("pair", "couple"):
            quant.count, quant.pair_of = 2, nxt == "pair"
        elif nxt == "dozen":
            quant.count = 12
        elif nxt in ("lot",):
            quant.vague = "many"
        else:
            quant.vague = "group"
            quant.row = nxt in ("row", "line")
        return quant, i + 3
    if t in ("lots", "dozens", "hundreds", "plenty", "groups", "rows", "piles") and nxt == "of":
        return _Quant(f"{t} of", vague="many", row=t == "rows"), i + 2
    if t in NUMBER_WORDS and t not in ("single",) or _is_number(t):
        number = int(t) if _is_number(t) else NUMBER_WORDS[t]
        if t in ("twenty", "thirty", "forty", "fifty") and nxt in NUMBER_WORDS and 1 <= NUMBER_WORDS[nxt] <= 9:
            return _Quant(f"{t} {nxt}", count=number + NUMBER_WORDS[nxt]), i + 2  # "twenty seven"
        if nxt in ("pairs", "pair") and nxt2 == "of":
            return _Quant(f"{t} {nxt} of", count=number * 2, pair_of=True), i + 3
        if nxt == "of" and t != "dozen":  # "one of the cats" / "two of them": not a count of a new group
            return None
        return _Quant(t, count=number, negated=number == 0), i + 1
    if t in _VAGUE_WORDS:
        if nxt == "of":  # "some of the", "many of them"
            return None
        return _Quant(t, vague=_VAGUE_WORDS[t]), i + 1
    if t == "no" and nxt not in ("one", "longer", "more", "other"):
        return _Quant("no", negated=True), i + 1
    if t in _DETERMINERS:
        if t in ("that", "this") and nxt in _BOUNDARY_WORDS:
            return None  # relative pronoun / demonstrative pronoun
        return _Quant(t, count=_DETERMINERS[t], determiner=t), i + 1
    return None


def _is_number(token: str) -> bool:
    """ASCII digits only ('²'.isdigit() is True but int('²') fails), and short enough to be a count."""
    return token.isascii() and token.isdigit() and len(token) <= 6


_QUANT_STARTS = frozenset(
    {*NUMBER_WORDS, *_DETERMINERS, *_VAGUE_WORDS, "no", "lots", "dozens", "hundreds", "plenty", "groups", "rows", "piles"}
)


@lru_cache(maxsize=65536)
def _is_boundary(tok: str) -> bool:
    if tok in _BOUNDARY_WORDS or not tok[0].isalnum():
        return True
    if tok.endswith("ing") and len(tok) > 4 and tok not in _ING_NOUNS and tok not in KINDS:
        return True
    if tok.endswith("ly") and len(tok) > 4 and tok not in KINDS and tok not in ("jelly", "belly", "lily", "holly", "family"):
        return True  # adverbs
    return False


def _find_head(words: list[str]) -> tuple[int, int, str] | None:
    """The rightmost known kind in ``words``: (start, end, singular name), longest match first."""
    for end in range(len(words), 0, -1):
        for size in range(min(_MAX_KIND_WORDS, end), 0, -1):
            span = words[end - size : end]
            key = tuple(span[:-1]) + (singularize(span[-1]),)
            if key in _KIND_TUPLES:
                return end - size, end, " ".join(key)
            if tuple(span) in _KIND_TUPLES:  # invariant plurals listed as kinds: "skis", "scissors"
                return end - size, end, " ".join(span)
    return None


def _compound_at(tokens: list[str], i: int) -> int:
    """Length of a multiword kind starting at ``tokens[i]`` whose first word would end a phrase, else 0."""
    if not _is_boundary(tokens[i]):
        return 0
    for size in range(_MAX_KIND_WORDS, 1, -1):
        span = tokens[i : i + size]
        if len(span) == size and tuple(span[:-1]) + (singularize(span[-1]),) in _KIND_TUPLES:
            return size
    return 0


def _chunk(tokens: list[str]) -> list[tuple[int, int, list[_Quant], list[str]]]:
    """Split tokens into candidate noun phrases: (start, end, quantifiers, content words)."""
    chunks = []
    i, n = 0, len(tokens)
    while i < n:
        start = i
        quants: list[_Quant] = []
        while i < n:
            matched = _match_quantifier(tokens, i)
            if matched is None:
                break
            quant, i = matched
            quants.append(quant)
        words: list[str] = []
        while i < n and _match_quantifier(tokens, i) is None:
            compound = _compound_at(tokens, i)  # "living room", "parking meter": not a verb + noun
            if compound:
                words.extend(tokens[i : i + compound])
                i += compound
                continue
            if _is_boundary(tokens[i]):
                break
            words.append(tokens[i])
            i += 1
        if quants or words:
            chunks.append((start, i, quants, words))
        if i == start:  # a boundary token: skip it
            i += 1
    return chunks


@lru_cache(maxsize=65536)
def _noun_like(word: str) -> bool:
    """Whether an unknown word can be a noun (not an adjective, participle or adverb by its form)."""
    if not word.isalpha() or len(word) < 3 or word in _ADJECTIVES or word in META_NOUNS:
        return False
    if word.endswith("ed") and len(word) > 4:  # participles: "parked", "stuffed" (not "bed", "shed")
        return False
    return not word.endswith(_ADJECTIVE_SUFFIXES)


def _phrase_from_chunk(start: int, end: int, quants: list[_Quant], words: list[str], notes: list[str]) -> _Phrase | None:
    """The noun phrase in a chunk; English compounds take their LAST noun as head ('a bird feeder' is a feeder)."""
    if not words:
        return None
    chunk_words = words
    singular_det = any(q.count == 1 for q in quants) and not any(q.count and q.count > 1 for q in quants)
    # "a lone car parks near ...": after a singular determiner, a trailing -s word is a verb.
    while len(words) > 1 and singular_det and _is_plural(words[-1]) and _find_head(words[:-1]) is not None:
        words = words[:-1]
    # Words about the picture or a part ("an umbrella set", "the screen on") do not head a phrase.
    while len(words) > 1 and (words[-1] in META_NOUNS or not _noun_like(words[-1])):
        known = _find_head(words)
        if known is not None and known[1] == len(words) and known[2] not in META_NOUNS:
            break  # a known kind ends here: "traffic light", "a toy"
        words = words[:-1]
    end -= len(chunk_words) - len(words)  # dropped trailing words belong to the gap after the phrase
    head = _find_head(words)
    last = words[-1]
    if head is not None and head[1] < len(words) and _noun_like(last) and _find_head([last]) is None:
        head = None  # compound with an unknown last noun: "donut holes", "bird feeder"
    if head is not None:
        h0, h1, name = head
        head_word = words[h1 - 1]
        modifiers = words[:h0]
        known = True
        name = KIND_ALIASES.get(name, name)
    else:
        if not quants and not (len(words) > 1 and _find_head(words[:-1]) is not None):
            if any(w.isalpha() and len(w) > 2 for w in words):
                notes.append(f"unrecognized words without a determiner: {' '.join(words)!r}")
            return None
        head_word = last
        if not _noun_like(head_word):
            notes.append(f"no noun found in {' '.join(words)!r}")
            return None
        name = head_word if head_word in _INVARIANT else singularize(head_word)
        modifiers = words[:-1]
        known = False
        notes.append(f"unknown object kind {name!r} (not in the vocabulary); kept as written")
    plural = _is_plural(head_word) or any(q.count is not None and q.count > 1 for q in quants)
    return _Phrase(start, end, name, plural, modifiers, quants, head_word, known)


# ------------------------------------------------------------------------- relations

_LEFT = r"(?:(?:to|on|at|in) )?(?:the )?left (?:hand )?(?:side )?of"
_RIGHT = r"(?:(?:to|on|at|in) )?(?:the )?right (?:hand )?(?:side )?of"
_PAIR_CUES: tuple[tuple[str, re.Pattern], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("left_of", rf"\b{_LEFT}\b"),
        ("right_of", rf"\b{_RIGHT}\b"),
        ("above", r"\b(?:on top of|on the top of|at the top of|above|over|atop|higher than)\b"),
        ("below", r"\b(?:below|under|beneath|underneath|on the bottom of|at the bottom of|lower than)\b"),
        ("between", r"\bbetween\b"),
        ("bigger_than", r"\b(?:bigger|larger|taller|huger|greater in size) than\b"),
        ("smaller_than", r"\b(?:smaller|tinier|shorter|littler) than\b"),
        ("next_to", r"\b(?:next to|beside|besides|near|nearby|by|alongside|close to|adjacent to|side by side with|"
         r"on (?:the )?side of|at the side of|by the side of)\b"),
    )
)
_ON_CUE = re.compile(r"\b(?:on|onto|upon|sitting on|standing on|lying on|laying on|resting on|perched on)$")
_NO_2D = re.compile(r"\b(?:in front of|behind|in back of|(?:hidden|covered|blocked|obscured|occluded) by)\b")
_REGION_RE = re.compile(
    r"\b(?:on|in|at|to|towards?) (?:the )?(?:very |far )?"
    r"(top|bottom|upper|lower|left|right|middle|center|centre)"
    r"(?: ?(left|right|top|bottom))?(?: (?:hand )?(?:side|corner|part|half|edge|area|portion))?"
    r"(?! of\b)(?! ?(?:side |hand |corner |part |half |edge )?of\b)"
)
_ROW_RE = re.compile(r"\b(?:in a (?:row|line)|side by side|lined up|in a straight line|next to each other|in rows?)\b")
_PRONOUN_CUE = re.compile(r"\b(on top of|on|above|over|under|below|beneath|next to|beside) (?:it|them)\b")
_PASSIVE_BY = re.compile(r"\b[a-z]+(?:ed|en) by\b")
_CLAUSE_BREAK = re.compile(r"(?:,|;|\.|\b(?:and|while|which|that|who|where|with|but)\b)")
_EACH_OTHER_RE = re.compile(r"\b(?:each other|one another)\b")


def _region(first: str, second: str | None) -> str:
    vertical = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
    horizontal = {"left": "left", "right": "right"}
    center = {"middle", "center", "centre"}
    if first in center:
        return "center"
    if second is None:
        return vertical.get(first) or horizontal[first]
    if first in vertical and second in horizontal:
        return f"{vertical[first]} {horizontal[second]}"
    if first in horizontal and second in vertical:
        return f"{vertical[second]} {horizontal[first]}"
    return vertical.get(first) or horizontal.get(first) or "center"


# ------------------------------------------------------------------------------- parser


def _strip_style(text: str) -> tuple[str, str]:
    """Remove a leading 'A realistic photo of' and return (style prefix, rest)."""
    match = _STYLE_RE.match(text)
    if not match:
        return "", text
    return match.group(1).strip(), text[match.end() :]


def _count_comparisons(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Extract 'the number of X is more than that of Y' clauses: (text without them, [(X, '>'|'<', Y)])."""
    found = []
    for m in _COUNT_CMP_RE.finditer(text):
        op = "<" if m.group(2) in ("less", "fewer", "smaller", "lower") else ">"
        found.append((m.group(1).strip(), op, m.group(3).strip()))
    return _COUNT_CMP_RE.sub(" ", text), found


def _phrase_text(modifiers: list[str], name: str) -> str:
    """'a red apple' for one instance; the article follows the first sound-ish letter."""
    words = [*modifiers, name]
    if name in _PLURALE_TANTUM:  # scissors, sunglasses: no singular article
        return " ".join(words)
    first = words[0]
    vowel = first[0] in "aeiou" and not first.startswith(("uni", "use", "usu", "one", "eu", "uk")) or first in (
        "hour", "honest", "heir", "8", "11", "18")
    return ("an " if vowel else "a ") + " ".join(words)


def _resolve_count(ph: _Phrase, previous: _Phrase | None, notes: list[str]) -> None:
    """The phrase's instance count from its quantifiers; vague ones get :data:`VAGUE_COUNTS` (noted)."""
    count: int | None = None
    vague: str | None = None
    for q in ph.quants:
        if q.negated:
            ph.negated = True
        if q.same_as_previous and previous is not None:
            count = previous.count
        if q.count is not None:
            count = q.count
        if q.vague is not None and count is None:
            vague = q.vague
    if ph.negated:
        return
    if count is not None and any(q.pair_of for q in ph.quants) and ph.head_word in _PLURALE_TANTUM | {"glasses"}:
        count //= 2  # "a pair of scissors" is one object
    if count is None and vague is not None:
        if vague == "some" and not ph.head_plural:
            count = 1  # "some water", "some bread"
        else:
            count, ph.vague = VAGUE_COUNTS[vague], True
            quant = next(q.text for q in ph.quants if q.vague)
            notes.append(f"'{quant} {ph.head_word}' has no number; read as {count}")
    if count is None:
        if ph.head_plural:
            count, ph.vague = BARE_PLURAL_COUNT, True
            notes.append(f"'{ph.head_word}' has no number; read as {count}")
        else:
            count = 1
    ph.count = max(1, count)


def _apply_comparisons(phrases: list[_Phrase], comparisons: list[tuple[str, str, str]], notes: list[str]) -> None:
    """Make vague counts satisfy 'the number of X is more/less than that of Y'."""
    for left_text, op, right_text in comparisons:
        left = _find_named(phrases, left_text)
        right = _find_named(phrases, right_text)
        if left is None or right is None:
            notes.append(f"count comparison between {left_text!r} and {right_text!r}: object not found")
            continue
        more = op == ">"
        if right.vague:  # explicit numbers are never changed; a vague side is chosen to agree
            right.count = max(1, left.count - 1) if more else left.count + 1
            if more and left.count <= 1 and left.vague:
                left.count = right.count + 1
            notes.append(f"count of {right.name!r} set to {right.count} so that {left_text!r} {op} {right_text!r}")
        elif left.vague:
            left.count = right.count + 1 if more else max(1, right.count - 1)
            notes.append(f"count of {left.name!r} set to {left.count} so that {left_text!r} {op} {right_text!r}")
        if (left.count > right.count) != more or left.count == right.count:
            notes.append(f"count comparison {left_text!r} {op} {right_text!r} could not be satisfied")


def _find_named(phrases: list[_Phrase], text: str) -> _Phrase | None:
    words = text.split()
    head = _find_head(words)
    name = head[2] if head else (singularize(words[-1]) if words else "")
    for ph in phrases:
        if ph.name == name and not ph.negated and not ph.scene:
            return ph
    return None


def parse_prompt(text: str) -> PromptSpec:
    """Parse free text into a :class:`PromptSpec` (objects, counts, relations, scene, negation).

    Never raises on any string; what it cannot interpret is listed in ``notes``.
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}; pass the prompt text")
    notes: list[str] = []
    lowered = " ".join(text.lower().replace("’", "'").split())
    style, body = _strip_style(lowered)
    body, comparisons = _count_comparisons(body)
    tokens = _tokenize(body)
    phrases = _find_phrases(tokens, notes)
    _mark_negation(phrases, tokens)
    _apply_comparisons(phrases, comparisons, notes)
    objects, phrase_to_object, negative, scenes = _build_objects(phrases, notes)
    relations = _read_relations(phrases, tokens, objects, phrase_to_object, notes)
    if not objects and not negative:
        notes.append("no objects found")
    return PromptSpec(
        prompt=text,
        objects=tuple(objects),
        relations=tuple(relations),
        background=_background(style, scenes),
        negative=tuple(negative),
        notes=tuple(notes),
    )


def _find_phrases(tokens: list[str], notes: list[str]) -> list[_Phrase]:
    """Noun phrases with resolved counts; scene phrases flagged, phrases about the picture dropped."""
    phrases = [ph for chunk in _chunk(tokens) if (ph := _phrase_from_chunk(*chunk, notes)) is not None]
    previous: _Phrase | None = None
    for ph in phrases:
        ph.scene = ph.name in SCENE_NOUNS and not _scene_as_object(ph, tokens)
        ph.meta = ph.name in META_NOUNS
        _resolve_count(ph, previous, notes)
        if not ph.scene and not ph.meta:
            previous = ph
    return [ph for ph in phrases if not ph.meta]


def _mark_negation(phrases: list[_Phrase], tokens: list[str]) -> None:
    """'without X', 'with no X', and lists continuing it ('without cats or dogs', 'without cats and dogs')."""
    for k, ph in enumerate(phrases):
        before = tokens[phrases[k - 1].end if k else 0 : ph.start]
        if before and before[-1] in ("without", "not", "nor", "excluding", "except"):
            ph.negated = True
        elif k and phrases[k - 1].negated and before in (["or"], [","], [",", "or"], ["nor"]):
            ph.negated = True
        elif k and phrases[k - 1].negated and before == ["and"] and not ph.quants:
            ph.negated = True


def _build_objects(
    phrases: list[_Phrase], notes: list[str]
) -> tuple[list[ObjectSpec], dict[int, int], list[str], list[_Phrase]]:
    """One ObjectSpec per kind-and-attributes; returns (objects, phrase -> object, negative kinds, scenes).

    "the X" after an X refers back to it. Groups are told apart only by their attributes
    (:func:`scenewright.layout.relations.group_members`), so a second mention of the same kind with the same
    attributes joins the first: counted again when it is counted ("a dog and another dog"),
    otherwise a reference back to it ("cats ... cats").
    """
    objects: list[ObjectSpec] = []
    phrase_to_object: dict[int, int] = {}
    negative: list[str] = []
    scenes: list[_Phrase] = []
    for k, ph in enumerate(phrases):
        if ph.negated:
            if ph.name not in negative:
                negative.append(ph.name)
            continue
        if ph.scene:
            scenes.append(ph)
            continue
        attributes = tuple(w for w in ph.modifiers if w in COLORS or w in MATERIALS)
        size = next((SIZE_WORDS[w] for w in reversed(ph.modifiers) if w in SIZE_WORDS), None)
        definite = any(q.determiner in ("the", "this", "that", "these", "those") for q in ph.quants)
        is_reference = definite and not any(q.count is not None or q.vague for q in ph.quants)
        earlier = [i for i, o in enumerate(objects) if o.name == ph.name]
        same = [i for i in earlier if (is_reference and not attributes) or objects[i].attributes == attributes]
        if same:
            target = same[-1]
            phrase_to_object[k] = target
            if size and objects[target].size is None:
                objects[target] = replace(objects[target], size=size)
            if not is_reference and any(q.count is not None for q in ph.quants):
                total = objects[target].count + ph.count
                objects[target] = replace(objects[target], count=total)
                notes.append(f"{ph.name!r} is mentioned twice; counted as {total}")
            continue
        phrase_to_object[k] = len(objects)
        objects.append(
            ObjectSpec(
                name=ph.name,
                count=ph.count,
                phrase=_phrase_text(ph.modifiers, ph.name),
                attributes=attributes,
                size=size,  # type: ignore[arg-type]
            )
        )
    kept = {o.name for o in objects}
    for name in negative:
        if name in kept:  # "a dog ... no dogs": the object asked for wins over its negation
            notes.append(f"{name!r} is both asked for and negated; kept as an object")
    return objects, phrase_to_object, [n for n in negative if n not in kept], scenes


def _read_relations(
    phrases: list[_Phrase],
    tokens: list[str],
    objects: list[ObjectSpec],
    phrase_to_object: dict[int, int],
    notes: list[str],
) -> list[RelationSpec]:
    """Relations read from the words between consecutive phrases (and regions/rows around each)."""
    relations: list[RelationSpec] = []

    def add(rel: RelationSpec) -> None:
        if rel not in relations:
            relations.append(rel)

    def gap(a: int, b: int) -> str:
        return " ".join(tokens[a:b])

    live = [k for k, ph in enumerate(phrases) if k in phrase_to_object or ph.scene]
    # "a cat on a table under an umbrella", "a cat in the sun under a bench": a relation after a
    # support or a place belongs to the thing on it / in it, unless a clause break intervenes.
    carried: dict[int, int] = {}
    for pos, k in enumerate(live):
        ph = phrases[k]
        nxt = live[pos + 1] if pos + 1 < len(live) else None
        after = gap(ph.end, phrases[nxt].start if nxt is not None else len(tokens))
        before_first = gap(0, ph.start) if pos == 0 else ""
        subject = phrase_to_object.get(k)
        if subject is not None:
            _regions_and_rows(ph, subject, after, before_first, nxt, phrase_to_object, objects, add)
        if k in carried and not _CLAUSE_BREAK.search(after):
            subject = carried[k]
        if subject is None or nxt is None:
            continue
        reference = phrase_to_object.get(nxt)
        # "side by side" is a row and "surrounded by" a passive, neither is the "by" of next_to
        cue = _pair_cue(_PASSIVE_BY.sub(" ", _ROW_RE.sub(" ", after)))
        if cue == "between":
            refs = [phrase_to_object[j] for j in live[pos + 1 : pos + 3] if j in phrase_to_object]
            plural_reference = refs and refs[0] != subject and objects[refs[0]].count > 1
            if plural_reference and not _joins_next(phrases, live, pos + 1, tokens):
                add(RelationSpec("between", subject, (refs[0], refs[0])))  # "between two trees"
            elif len(refs) == 2 and len({subject, *refs}) == 3:
                add(RelationSpec("between", subject, (refs[0], refs[1])))
            else:
                notes.append(f"'between' for {objects[subject].name!r} needs two reference objects")
            continue
        if cue is None and _ON_CUE.search(after):
            cue = "above"
        if cue is None and _NO_2D.search(after):
            notes.append(f"depth relation ('in front of', 'behind', 'hidden by') for {objects[subject].name!r} has no 2-D position; ignored")
        if cue is None and after.strip() in ("and", ",", "and a", "with") and reference is not None:
            # "X and Y next to each other": the cue follows the pair
            pair_after = gap(phrases[nxt].end, phrases[live[pos + 2]].start if pos + 2 < len(live) else len(tokens))
            if _EACH_OTHER_RE.search(pair_after) or re.search(r"\bside by side\b", pair_after):
                if (_pair_cue(pair_after) or "next_to") in ("next_to", "left_of", "right_of"):
                    cue = "next_to"
        if reference is None:  # a place ("on a beach"): background, not a relation
            if phrases[nxt].scene and re.search(r"\b(?:in|on|at|inside|within|into|up in|high in)(?: the| a| an)?$", after):
                carried[nxt] = subject
                if phrases[nxt].name in REGION_SCENES and not phrases[nxt].modifiers:  # "in the sky": a region
                    add(RelationSpec("at", subject, (), REGION_SCENES[phrases[nxt].name]))  # type: ignore[arg-type]
            continue
        if cue is None or reference == subject:
            continue
        if cue == "above" and (_ON_CUE.search(after) or "on top of" in after):
            carried[nxt] = subject
        add(RelationSpec(cue, subject, (reference,)))  # type: ignore[arg-type]
    for rel in _pronoun_relations(phrases, tokens, phrase_to_object):
        add(rel)
    for rel in _trailing_support(phrases, tokens, live, objects, phrase_to_object, relations):
        add(rel)
    return relations


def _joins_next(phrases: list[_Phrase], live: list[int], pos: int, tokens: list[str]) -> bool:
    """Whether the phrase at ``live[pos]`` is joined to the next one by 'and' / ',' ('between two cats and a dog')."""
    if pos + 1 >= len(live):
        return False
    gap = tokens[phrases[live[pos]].end : phrases[live[pos + 1]].start]
    return bool(gap) and gap[0] in ("and", ",", "&")


_TRAILING_ON = re.compile(r"\b(?:on|upon|onto|atop|on top of|in)(?: the| a| an| its| their)?$")
#: Supports one is "in" rather than "on" ("two cats in a chair"); "in a box" is inside, not on.
_IN_SUPPORTS = frozenset(("bed", "chair", "armchair", "sofa", "couch"))


def _trailing_support(
    phrases: list[_Phrase],
    tokens: list[str],
    live: list[int],
    objects: list[ObjectSpec],
    phrase_to_object: dict[int, int],
    relations: list[RelationSpec],
) -> list[RelationSpec]:
    """'two cats to the left of a dog on a sofa': a sentence-final support holds every earlier group (module docstring)."""
    if len(live) < 3 or live[-1] not in phrase_to_object:
        return []
    last = phrases[live[-1]]
    support = phrase_to_object[live[-1]]
    tail = [t for t in tokens[last.end :] if t.isalnum()]
    before = " ".join(tokens[phrases[live[-2]].end : last.start])
    cue = _TRAILING_ON.search(before)
    if objects[support].name not in SUPPORT_KINDS or tail or cue is None:
        return []
    if cue.group(0).split()[0] == "in" and objects[support].name not in _IN_SUPPORTS:
        return []
    start = max((i + 1 for i, t in enumerate(tokens[: last.start]) if t in (".", ";", "!", "?")), default=0)
    earlier = sorted({phrase_to_object[k] for k in live[:-1] if k in phrase_to_object and phrases[k].start >= start})
    related = {r.subject for r in relations if support in r.references} | {
        i for r in relations if r.subject == support for i in r.references
    }
    if len(earlier) < 2:
        return []
    return [RelationSpec("above", g, (support,)) for g in earlier if g != support and g not in related]


def _pronoun_relations(phrases: list[_Phrase], tokens: list[str], phrase_to_object: dict[int, int]) -> list[RelationSpec]:
    """'a table with two apples on it': 'it' is the object mentioned before."""
    out = []
    for k, ph in enumerate(phrases):
        if k == 0 or k not in phrase_to_object:
            continue
        after = " ".join(tokens[ph.end : phrases[k + 1].start if k + 1 < len(phrases) else len(tokens)])
        m = _PRONOUN_CUE.search(after)
        antecedent = next((phrase_to_object[j] for j in range(k - 1, -1, -1) if j in phrase_to_object), None)
        if m is None or antecedent is None or antecedent == phrase_to_object[k]:
            continue
        word = m.group(1)
        kind = "below" if word in ("under", "below", "beneath") else "next_to" if word in ("next to", "beside") else "above"
        out.append(RelationSpec(kind, phrase_to_object[k], (antecedent,)))  # type: ignore[arg-type]
    return out


def _regions_and_rows(ph, subject, after, before_first, nxt, phrase_to_object, objects, add) -> None:
    """Absolute regions ('on the left', 'in the top right corner') and rows ('in a row') of one phrase.

    A region that comes after a conjunction in the gap belongs to the next phrase
    ("..., and on the right a dog").
    """
    for region_text in (before_first, after):
        for m in _REGION_RE.finditer(region_text):
            owner = subject
            if region_text is after:
                lead = region_text[: m.start()]
                if re.search(r"(?:\band\b|,|;|\.)", lead) and nxt is not None and nxt in phrase_to_object:
                    owner = phrase_to_object[nxt]
            add(RelationSpec("at", owner, (), _region(m.group(1), m.group(2))))  # type: ignore[arg-type]
    if _ROW_RE.search(after) and not _EACH_OTHER_RE.search(after) and objects[subject].count > 1:
        add(RelationSpec("in_row", subject))
    if any(q.row for q in ph.quants) and objects[subject].count > 1:
        add(RelationSpec("in_row", subject))


def _scene_as_object(ph: _Phrase, tokens: list[str]) -> bool:
    """'a yellow sun and a blue sky' draws the sun and the sky; 'on a beach' / 'in a white kitchen' are the scene.

    A place noun is an object only when it carries a color or material and no locative
    preposition introduces it, and it is not a room.
    """
    if ph.name in _ROOMS or ph.name == "scene":
        return False
    if not any(w in COLORS or w in MATERIALS for w in ph.modifiers):
        return False
    before = tokens[ph.start - 1] if ph.start > 0 else ""
    return before not in _LOCATIVES


def _pair_cue(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for kind, pattern in _PAIR_CUES:
        m = pattern.search(text)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), kind)
    return best[1] if best else None


def _background(style: str, scenes: list[_Phrase]) -> str:
    """LMD-style background: 'A realistic scene', or the style plus the place ('A photo of a beach')."""
    places = [s for s in scenes if s.name != "scene" and s.name not in REGION_SCENES]
    style_words = [w for w in style.replace("-", " ").split() if w not in _STYLE_MEDIA]
    if places:
        place = _phrase_text(places[0].modifiers, places[0].name)
        if style:
            head = style if style.split()[0] in ("a", "an", "the") else f"a {style}"
            text = f"{head} of {place}"
        else:
            text = place
    elif style_words:
        text = "a " + " ".join(style_words) + " scene"
    else:
        return ""
    return text[0].upper() + text[1:]


def name_of_phrase(phrase: str) -> str:
    """The singular object kind a phrase names: 'a red apple' -> 'apple', 'two teddy bears' -> 'teddy bear'."""
    tokens = _tokenize(phrase)
    notes: list[str] = []
    for start, end, quants, words in _chunk(tokens):
        # A peer's phrase is one object even without a determiner ("red apple"), so supply one.
        ph = _phrase_from_chunk(start, end, quants or [_Quant("a", count=1)], words, notes)
        if ph is not None:
            return ph.name
    words = [w for w in tokens if w.isalnum() and w not in _DETERMINERS]
    if words:
        return singularize(words[-1])
    return " ".join(phrase.split()).lower() or phrase

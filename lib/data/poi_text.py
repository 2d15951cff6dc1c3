"""Synthetic points of interest whose category and text carry a region's commercial character.

A generated city gives each region a hidden *commercial character* ``c``
(standardised: mean 0, sd 1, in practice within [-3, 3]). Its POIs are drawn
so that a text encoder reading their names and descriptions can recover
``c``; the land cover under a POI is a secondary influence (it shapes which
categories are plausible and the place phrase, never the wording that
carries ``c``). The caller places the POIs (distinct pixels) and passes each
one's land-cover label and whether it lies within 60 m of water.

Category
--------
For a POI on land cover ``l`` in a region of character ``c``::

    P(category = k | l, c) = w_k(l, c) = base_k(l) * exp(beta_k * c) / sum_j base_j(l) * exp(beta_j * c)

(:func:`category_weights`). ``beta_k`` is the category's commercial loading,
``base_k(l)`` how common it is on ``l`` at ``c = 0`` (unnormalised; 0 means
never). Since ``d/dc E_w[beta] = Var_w(beta) >= 0``, raising ``c`` moves
mass towards the positive-loading categories on every land cover. Water
carries no POIs: asking for it is a ``ValueError``.

    category              beta  dense medium sparse indust roads green forest agric
    cafe                  +0.4    3.0    1.0    0.4    0.4   0.6   1.0    0.3   0.2
    restaurant            +0.5    2.5    0.8    0.4    0.3   0.5   0.5    0.3   0.3
    bar                   +0.7    2.0    0.4    0      0.3   0.3   0.3    0     0
    bakery                -0.2    2.0    1.2    0.6    0     0     0      0     0
    supermarket            0      1.5    1.5    0      0.8   0.5   0      0     0
    convenience_store     -0.3    1.5    1.0    0.6    0     1.0   0      0     0
    boutique              +1.0    1.5    0.3    0.1    0.1   0     0.1    0     0
    bank                  +0.9    1.0    0.3    0.1    0.2   0.2   0      0     0
    office                +0.9    1.0    0.4    0.2    1.5   0.3   0      0     0
    hotel                 +0.8    0.8    0.2    0.2    0.4   0.5   0.1    0.3   0.2
    pharmacy              +0.1    1.0    1.0    0      0     0     0      0     0
    clinic                 0      1.0    1.0    0      0     0     0      0     0
    school                -0.8    0.6    1.5    1.0    0     0.2   0      0     0.2
    kindergarten          -0.9    0.6    1.5    1.5    0     0     0.4    0     0
    church                -0.8    0.6    0.8    1.0    0     0.2   0.3    0.2   0.5
    library               -0.6    0.6    0.6    0      0     0     0.2    0     0
    community_centre      -0.7    0.6    0.8    0.6    0.1   0     0.4    0     0
    sports_centre         -0.3    0.3    0.8    0.6    0.4   0     1.5    0.3   0
    park_kiosk            -0.2    0      0      0      0     0     2.0    1.0   0
    workshop              -0.3    0      0      0.3    2.5   0.4   0      0     0.5
    warehouse              0      0      0      0      3.0   0     0      0     0.3
    car_dealer            +0.3    0      0      0      1.5   1.0   0      0     0.1
    petrol_station         0      0      0      0      0.8   2.0   0      0     0.2
    garden_centre         -0.5    0      0      1.0    0.4   0     0      0     1.0
    farm_shop             -0.9    0      0      0      0     0     0      0.1   3.0
    riding_stable         -0.7    0      0      0.3    0     0     0      0.8   1.5
    campsite              -0.4    0      0      0      0     0     0      1.5   0.3
    hairdresser           +0.2   0.25    0.2   0.05      0     0      0      0    0
    dentist               +0.3   0.15   0.15   0.05      0     0      0      0    0
    laundry               -0.6    0.1    0.1   0.02   0.02     0      0      0    0
    florist               +0.3    0.1   0.08   0.03      0     0   0.05      0    0
    bookshop              +0.2    0.1   0.05   0.02      0     0      0      0    0
    optician              +0.4    0.1   0.05      0      0     0      0      0    0
    post_office           -0.4   0.05   0.05   0.02      0  0.02      0      0    0
    hardware_store        -0.5   0.03   0.06   0.05    0.1  0.05      0      0 0.02
    veterinary            -0.2   0.03   0.05   0.05      0     0      0      0 0.05
    bicycle_shop          +0.1   0.04   0.04   0.02   0.02     0   0.02      0    0
    jeweller              +1.0   0.06   0.01      0      0     0      0      0    0
    gallery               +0.8   0.05   0.02      0   0.02     0   0.02      0    0
    cinema                +0.5   0.04   0.02      0   0.02     0      0      0    0
    museum                +0.5   0.04   0.01      0      0     0   0.04      0    0
    tailor                +0.6   0.04   0.01      0      0     0      0      0    0
    theatre               +0.6   0.03   0.01      0      0     0   0.01      0    0

(columns: dense/medium/sparse residential, industrial_commercial, roads,
green_urban, forest, agriculture). Every land cover has categories of both
signs of ``beta``, so ``c`` shifts the mix everywhere. The last sixteen rows
are the long tail of a real city's POIs: services and shops that are each
rare (base weights of 0.01-0.25 against 1-3 for the common ones), together
some 5 % of the POIs of a residential block, so a region's category histogram is
long-tailed as in OpenStreetMap data.

Text
----
Each wording choice that carries ``c`` is a draw from an *upmarket* or a
*plain* pool, upmarket with probability::

    p_high(c) = 1 / (1 + exp(-TEXT_SLOPE * c))        (TEXT_SLOPE = 1.25)

independently per slot, so the share of upmarket wording is graded in ``c``
(0.02 at c = -3, 0.22 at -1, 0.5 at 0, 0.78 at +1, 0.98 at +3) and independent of land cover.

*Name*: a stem and a category noun, in one of three patterns (equally
likely): ``"{neutral stem} {noun}"`` ("Linden Bistro"), ``"{tiered stem}
{noun}"`` ("Grand Bistro", "Family Kitchen") or ``"{tiered stem} {neutral
stem} {noun}"`` ("Royal Harbour Wine Bar"). The tiered stem (:data:`HIGH_STEMS`
or :data:`LOW_STEMS`) and the noun (upmarket or plain, per category) are two
slots. A stem that repeats a word of the noun is dropped (tiered) or
replaced by the next neutral stem.

*Description*: one of :data:`TEMPLATES` (uniform) filled with the
category's plain noun (no ``c``), a land-cover place phrase (no ``c``;
``"among detached houses with gardens"``), ``" by the water"`` exactly when
``near_water``, and three ``c`` slots: an adjective (``"stylish"`` /
``"modest"``) and either a setting phrase (``"popular with tourists"`` /
``"popular with local families"``) and a feature (``"premium prices"`` /
``"affordable prices"``) or two features. Descriptions are 10-20 words.

Oracle
------
:func:`commercial_vocabulary_score` counts the words of :data:`HIGH_WORDS`
and :data:`LOW_WORDS` in a text and returns ``(high - low) / (high + low)``
(0 without either). Every upmarket pool item contains a high word and no low
word, every plain one the reverse, and the neutral parts (place phrases,
category nouns, neutral stems, template wording) contain neither.

Randomness
----------
:func:`draw_pois` takes all its draws from the generator it is given, in a
fixed order (one uniform per POI for the category, then a block of 16 per
POI for the text), so the same generator state gives the same POIs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "HIGH_STEMS",
    "HIGH_WORDS",
    "LANDCOVER_LABELS",
    "LOW_STEMS",
    "LOW_WORDS",
    "POI_CATEGORIES",
    "POI_LANDCOVERS",
    "TEMPLATES",
    "TEXT_SLOPE",
    "category_weights",
    "commercial_loadings",
    "commercial_vocabulary_score",
    "draw_pois",
    "p_high",
]

# The land-cover classes of lib.data.aerial.LandCover, in its order.
LANDCOVER_LABELS = (
    "dense_residential", "medium_residential", "sparse_residential", "industrial_commercial",
    "roads", "green_urban", "forest", "agriculture", "water",
)
# Those that can carry POIs (all but water), the columns of the base table.
POI_LANDCOVERS = LANDCOVER_LABELS[:-1]

# category, beta, base weight per land cover (columns in POI_LANDCOVERS order). Mirrored in the docstring.
_TABLE: tuple[tuple[str, float, tuple[float, ...]], ...] = (
    ("cafe",              +0.4, (3.0, 1.0, 0.4, 0.4, 0.6, 1.0, 0.3, 0.2)),
    ("restaurant",        +0.5, (2.5, 0.8, 0.4, 0.3, 0.5, 0.5, 0.3, 0.3)),
    ("bar",               +0.7, (2.0, 0.4, 0.0, 0.3, 0.3, 0.3, 0.0, 0.0)),
    ("bakery",            -0.2, (2.0, 1.2, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0)),
    ("supermarket",        0.0, (1.5, 1.5, 0.0, 0.8, 0.5, 0.0, 0.0, 0.0)),
    ("convenience_store", -0.3, (1.5, 1.0, 0.6, 0.0, 1.0, 0.0, 0.0, 0.0)),
    ("boutique",          +1.0, (1.5, 0.3, 0.1, 0.1, 0.0, 0.1, 0.0, 0.0)),
    ("bank",              +0.9, (1.0, 0.3, 0.1, 0.2, 0.2, 0.0, 0.0, 0.0)),
    ("office",            +0.9, (1.0, 0.4, 0.2, 1.5, 0.3, 0.0, 0.0, 0.0)),
    ("hotel",             +0.8, (0.8, 0.2, 0.2, 0.4, 0.5, 0.1, 0.3, 0.2)),
    ("pharmacy",          +0.1, (1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
    ("clinic",             0.0, (1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
    ("school",            -0.8, (0.6, 1.5, 1.0, 0.0, 0.2, 0.0, 0.0, 0.2)),
    ("kindergarten",      -0.9, (0.6, 1.5, 1.5, 0.0, 0.0, 0.4, 0.0, 0.0)),
    ("church",            -0.8, (0.6, 0.8, 1.0, 0.0, 0.2, 0.3, 0.2, 0.5)),
    ("library",           -0.6, (0.6, 0.6, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0)),
    ("community_centre",  -0.7, (0.6, 0.8, 0.6, 0.1, 0.0, 0.4, 0.0, 0.0)),
    ("sports_centre",     -0.3, (0.3, 0.8, 0.6, 0.4, 0.0, 1.5, 0.3, 0.0)),
    ("park_kiosk",        -0.2, (0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 0.0)),
    ("workshop",          -0.3, (0.0, 0.0, 0.3, 2.5, 0.4, 0.0, 0.0, 0.5)),
    ("warehouse",          0.0, (0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.3)),
    ("car_dealer",        +0.3, (0.0, 0.0, 0.0, 1.5, 1.0, 0.0, 0.0, 0.1)),
    ("petrol_station",     0.0, (0.0, 0.0, 0.0, 0.8, 2.0, 0.0, 0.0, 0.2)),
    ("garden_centre",     -0.5, (0.0, 0.0, 1.0, 0.4, 0.0, 0.0, 0.0, 1.0)),
    ("farm_shop",         -0.9, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 3.0)),
    ("riding_stable",     -0.7, (0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.8, 1.5)),
    ("campsite",          -0.4, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 0.3)),
    ("hairdresser",       +0.2, (0.25, 0.2, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0)),
    ("dentist",           +0.3, (0.15, 0.15, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0)),
    ("laundry",           -0.6, (0.1, 0.1, 0.02, 0.02, 0.0, 0.0, 0.0, 0.0)),
    ("florist",           +0.3, (0.1, 0.08, 0.03, 0.0, 0.0, 0.05, 0.0, 0.0)),
    ("bookshop",          +0.2, (0.1, 0.05, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0)),
    ("optician",          +0.4, (0.1, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
    ("post_office",       -0.4, (0.05, 0.05, 0.02, 0.0, 0.02, 0.0, 0.0, 0.0)),
    ("hardware_store",    -0.5, (0.03, 0.06, 0.05, 0.1, 0.05, 0.0, 0.0, 0.02)),
    ("veterinary",        -0.2, (0.03, 0.05, 0.05, 0.0, 0.0, 0.0, 0.0, 0.05)),
    ("bicycle_shop",      +0.1, (0.04, 0.04, 0.02, 0.02, 0.0, 0.02, 0.0, 0.0)),
    ("jeweller",          +1.0, (0.06, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
    ("gallery",           +0.8, (0.05, 0.02, 0.0, 0.02, 0.0, 0.02, 0.0, 0.0)),
    ("cinema",            +0.5, (0.04, 0.02, 0.0, 0.02, 0.0, 0.0, 0.0, 0.0)),
    ("museum",            +0.5, (0.04, 0.01, 0.0, 0.0, 0.0, 0.04, 0.0, 0.0)),
    ("tailor",            +0.6, (0.04, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
    ("theatre",           +0.6, (0.03, 0.01, 0.0, 0.0, 0.0, 0.01, 0.0, 0.0)),
)

POI_CATEGORIES: tuple[str, ...] = tuple(row[0] for row in _TABLE)
_BETA = np.array([row[1] for row in _TABLE])
with np.errstate(divide="ignore"):
    _LOG_BASE = np.log(np.array([row[2] for row in _TABLE]).T)  # (land cover, category); -inf where never
_LANDCOVER_INDEX = {label: i for i, label in enumerate(POI_LANDCOVERS)}

# Probability of upmarket wording per slot: logistic in c with this slope.
TEXT_SLOPE = 1.25

# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------

# The category in plain words, as the descriptions use it (carries no c).
_PLAIN_NOUN = {
    "cafe": "cafe", "restaurant": "restaurant", "bar": "bar", "bakery": "bakery",
    "supermarket": "supermarket", "convenience_store": "convenience store", "boutique": "boutique",
    "bank": "bank branch", "office": "office building", "hotel": "hotel", "pharmacy": "pharmacy",
    "clinic": "clinic", "school": "school", "kindergarten": "kindergarten", "church": "church",
    "library": "library", "community_centre": "community centre", "sports_centre": "sports centre",
    "park_kiosk": "park kiosk", "workshop": "workshop", "warehouse": "warehouse",
    "car_dealer": "car dealership", "petrol_station": "petrol station", "garden_centre": "garden centre",
    "farm_shop": "farm shop", "riding_stable": "riding stable", "campsite": "campsite",
    "hairdresser": "hair salon", "dentist": "dental practice", "laundry": "launderette", "florist": "florist",
    "bookshop": "bookshop", "optician": "optician", "post_office": "post office",
    "hardware_store": "hardware store", "veterinary": "veterinary clinic", "bicycle_shop": "bicycle shop",
    "jeweller": "jewellery shop", "gallery": "art gallery", "cinema": "cinema", "museum": "museum",
    "tailor": "tailor", "theatre": "theatre",
}

# Name nouns per category: (upmarket, plain).
_NAME_NOUNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cafe": (("Espresso Bar", "Coffee House", "Roastery"), ("Coffee Shop", "Tea Room", "Snack Bar")),
    "restaurant": (("Brasserie", "Bistro", "Dining Room"), ("Diner", "Kitchen", "Canteen")),
    "bar": (("Cocktail Lounge", "Wine Bar", "Champagne Bar"), ("Pub", "Tavern", "Arms")),
    "bakery": (("Patisserie", "Boulangerie", "Bakehouse"), ("Bakery", "Bread Shop", "Bakers")),
    "supermarket": (("Food Hall", "Fine Foods", "Epicerie"), ("Supermarket", "Discount Market", "Grocery")),
    "convenience_store": (("Express", "Deli", "City Market"), ("Mini Market", "General Store", "Food Store")),
    "boutique": (("Boutique", "Couture", "Concept Store"), ("Clothing", "Outfitters", "Thrift Shop")),
    "bank": (("Private Bank", "Capital", "Wealth Management"), ("Credit Union", "Savings Bank", "Building Society")),
    "office": (("Business Centre", "Tower", "Plaza"), ("Offices", "Workspace", "Chambers")),
    "hotel": (("Hotel", "Suites", "Residence"), ("Guest House", "Inn", "Hostel")),
    "pharmacy": (("Apothecary", "Pharmacy"), ("Chemist", "Dispensary")),
    "clinic": (("Medical Centre", "Private Clinic"), ("Health Centre", "Surgery", "Clinic")),
    "school": (("Academy", "International School"), ("Primary School", "School")),
    "kindergarten": (("Montessori Nursery", "Early Learning Centre"), ("Kindergarten", "Playgroup", "Nursery")),
    "church": (("Cathedral", "Minster"), ("Chapel", "Parish Church")),
    "library": (("Library", "Reading Room"), ("Public Library", "Lending Library")),
    "community_centre": (("Cultural Centre", "Arts Hub"), ("Community Centre", "Hall", "Meeting Rooms")),
    "sports_centre": (("Fitness Club", "Health Club", "Spa"), ("Sports Centre", "Leisure Centre", "Sports Hall")),
    "park_kiosk": (("Pavilion", "Garden Cafe"), ("Kiosk", "Snack Hut")),
    "workshop": (("Design Studio", "Studio"), ("Repair Shop", "Workshop", "Garage")),
    "warehouse": (("Logistics", "Distribution Centre"), ("Warehouse", "Storage", "Depot")),
    "car_dealer": (("Motors", "Prestige Cars"), ("Used Cars", "Car Sales")),
    "petrol_station": (("Service Station", "Fuel Stop"), ("Petrol Station", "Filling Station")),
    "garden_centre": (("Garden Design", "Plant Gallery"), ("Garden Centre", "Plant Shop")),
    "farm_shop": (("Farm Deli", "Farm Kitchen"), ("Farm Shop", "Farm Stall")),
    "riding_stable": (("Equestrian Centre", "Riding Club"), ("Riding Stables", "Pony Club")),
    "campsite": (("Glamping", "Lodges"), ("Campsite", "Caravan Park")),
    "hairdresser": (("Salon", "Hair Studio"), ("Barbers", "Hairdressers")),
    "dentist": (("Dental Spa", "Smile Clinic"), ("Dental Surgery", "Dentist")),
    "laundry": (("Dry Cleaners", "Valet Laundry"), ("Launderette", "Wash House")),
    "florist": (("Fleuriste", "Flower Studio"), ("Flower Stall", "Florist")),
    "bookshop": (("Booksellers", "Book Gallery"), ("Book Shop", "Secondhand Books")),
    "optician": (("Eyewear", "Optique"), ("Opticians", "Eye Care")),
    "post_office": (("Mail Centre", "Parcel Lounge"), ("Post Office", "Sub Post Office")),
    "hardware_store": (("Home Design", "Interiors"), ("Hardware", "Ironmongers")),
    "veterinary": (("Animal Hospital", "Pet Clinic"), ("Vets", "Animal Surgery")),
    "bicycle_shop": (("Cycle Boutique", "Bike Studio"), ("Bike Repair", "Cycle Shop")),
    "jeweller": (("Jewellers", "Goldsmiths"), ("Pawn Shop", "Watch Repair")),
    "gallery": (("Gallery", "Fine Art"), ("Art Space", "Print Shop")),
    "cinema": (("Picturehouse", "Cinema Lounge"), ("Cinema", "Film Club")),
    "museum": (("Museum of Art", "Kunsthalle"), ("Heritage Museum", "History Room")),
    "tailor": (("Bespoke Tailors", "Couturier"), ("Alterations", "Tailor")),
    "theatre": (("Opera House", "Playhouse"), ("Theatre", "Stage Club")),
}

_NEUTRAL_STEMS = (
    "Linden", "Harbour", "Mill", "Oak", "Station", "Birch", "North", "Castle", "Meadow", "Elm",
    "Bridge", "Rose", "Maple", "Willow", "Hill", "Lake", "Pine", "Quay", "Garden", "Market",
)
HIGH_STEMS = ("Grand", "Maison", "Atelier", "Royal", "Regent", "Sterling", "Belvedere", "Imperial")
LOW_STEMS = ("Corner", "Family", "Budget", "Village", "Parish", "Hometown", "Neighbourhood", "Thrifty")

# Where the POI stands, per land cover (carries no c; 3-5 words).
_PLACES = {
    "dense_residential": ("in a city-centre block", "among tall apartment buildings", "between dense apartment blocks"),
    "medium_residential": ("on a residential street", "among low-rise apartment buildings",
                           "in a terraced housing area"),
    "sparse_residential": ("among detached houses with gardens", "on a suburban street", "in a leafy suburb"),
    "industrial_commercial": ("in an industrial estate", "next to warehouses and depots", "beside a freight yard"),
    "roads": ("by a main road", "at a major junction", "on an arterial road"),
    "green_urban": ("in a city park", "beside a park lawn", "next to a park"),
    "forest": ("at the forest edge", "on a woodland trail", "in a forest clearing"),
    "agriculture": ("among farm fields", "on a country road", "between open fields"),
}
_NEAR_WATER = " by the water"

# Pools that carry c: (upmarket, plain). Adjectives 1 word, settings 3-4 words, features 2-3 words.
_ADJECTIVES = (
    ("upscale", "stylish", "trendy", "fashionable", "exclusive", "elegant", "chic", "luxurious"),
    ("modest", "homely", "simple", "unpretentious", "humble", "neighbourly", "plain", "basic"),
)
_SETTINGS = (
    ("popular with tourists", "in the nightlife district", "busy until late", "crowded with lunchtime shoppers",
     "on a shopping boulevard", "next to corporate headquarters", "full of business travellers",
     "among designer stores"),
    ("popular with local families", "used by nearby residents", "in a quiet neighbourhood", "where neighbours meet",
     "run by a family", "next to the allotments", "near the playground", "frequented by retirees"),
)
_FEATURES = (
    ("premium prices", "late opening hours", "a designer interior", "a concierge service", "multilingual staff",
     "luxury finishes", "an international clientele", "a rooftop terrace"),
    ("affordable prices", "discounts for pensioners", "a children's corner", "a neighbourhood noticeboard",
     "a regulars' table", "budget offers", "a loyalty card", "cheap daily specials"),
)

# Description templates. Fields: A/a (article for adj), adj/Adj, noun/Noun, place, water, p/P (setting), f, f2.
TEMPLATES = (
    "{A} {adj} {noun} {place}{water}, {p}, with {f}.",
    "{Adj} {noun} {place}{water}; {p}, {f}.",
    "{P}: {a} {adj} {noun} {place}{water}, offering {f}.",
    "This {adj} {noun} {place}{water} offers {f} and {f2}.",
    "{Adj} {noun} {place}{water}, known for {f}; {p}.",
    "{Noun} {place}{water}: {adj}, {p}, {f}.",
    "{Adj}, {p}: {noun} {place}{water}; it offers {f}.",
    "{P}, this {adj} {noun} {place}{water} offers {f}.",
)

# The oracle's vocabulary: every upmarket pool item has one of HIGH_WORDS and none of LOW_WORDS, and vice versa.
HIGH_WORDS = frozenset({
    # adjectives
    "upscale", "stylish", "trendy", "fashionable", "exclusive", "elegant", "chic", "luxurious",
    # settings
    "tourists", "nightlife", "busy", "late", "crowded", "lunchtime", "shoppers", "shopping", "boulevard",
    "corporate", "headquarters", "business", "travellers", "designer",
    # features
    "premium", "concierge", "multilingual", "luxury", "international", "clientele", "rooftop",
    # stems
    "grand", "maison", "atelier", "royal", "regent", "sterling", "belvedere", "imperial",
})
LOW_WORDS = frozenset({
    # adjectives
    "modest", "homely", "simple", "unpretentious", "humble", "neighbourly", "plain", "basic",
    # settings
    "local", "families", "family", "nearby", "residents", "quiet", "neighbourhood", "neighbours",
    "allotments", "playground", "retirees",
    # features
    "affordable", "discounts", "pensioners", "children", "corner", "regulars", "budget", "loyalty", "cheap",
    # stems
    "village", "parish", "hometown", "thrifty",
})

_WORD = re.compile(r"[a-z]+")


# ---------------------------------------------------------------------------
# Category
# ---------------------------------------------------------------------------


def _landcover_index(landcover: str) -> int:
    if landcover == "water":
        raise ValueError("land cover 'water' carries no POIs")
    try:
        return _LANDCOVER_INDEX[landcover]
    except (KeyError, TypeError):
        raise ValueError(f"unknown land cover {landcover!r}; expected one of {POI_LANDCOVERS}") from None


def commercial_loadings() -> np.ndarray:
    """``beta_k`` of each category in :data:`POI_CATEGORIES` order (a copy)."""
    return _BETA.copy()


def category_weights(landcover: str, commercial: float) -> np.ndarray:
    """``P(category | landcover, c)``, shape ``(len(POI_CATEGORIES),)``: ``base_k(l) exp(beta_k c)``, normalised.

    Raises ``ValueError`` for ``"water"`` (no POIs there), an unknown label or
    a non-finite ``commercial``.
    """
    logits = _LOG_BASE[_landcover_index(landcover)] + _BETA * _finite(commercial)
    w = np.exp(logits - logits.max())
    return w / w.sum()


def _finite(commercial: float) -> float:
    c = float(commercial)
    if not math.isfinite(c):
        raise ValueError(f"commercial character must be finite, got {commercial!r}")
    return c


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------


def p_high(commercial: float, slope: float = TEXT_SLOPE) -> float:
    """Probability that one wording slot is upmarket: ``1 / (1 + exp(-slope * c))``."""
    return 1.0 / (1.0 + math.exp(-slope * commercial))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _pick(pool: Sequence[str], u: float) -> str:
    return pool[min(int(u * len(pool)), len(pool) - 1)]


def _name(category: str, u: Sequence[float], high_stem: bool, high_noun: bool) -> str:
    noun = _pick(_NAME_NOUNS[category][0 if high_noun else 1], u[0])
    noun_words = set(noun.split())
    i = min(int(u[1] * len(_NEUTRAL_STEMS)), len(_NEUTRAL_STEMS) - 1)
    while _NEUTRAL_STEMS[i] in noun_words:
        i = (i + 1) % len(_NEUTRAL_STEMS)
    neutral = _NEUTRAL_STEMS[i]
    tiered = _pick(HIGH_STEMS if high_stem else LOW_STEMS, u[2])
    pattern = min(int(u[3] * 3), 2)
    if tiered in noun_words:
        pattern = 0
    if pattern == 0:
        return f"{neutral} {noun}"
    if pattern == 1:
        return f"{tiered} {noun}"
    return f"{tiered} {neutral} {noun}"


def draw_pois(rng: np.random.Generator, landcover: Sequence[str], commercial: float,
              near_water: Sequence[bool], *, text_slope: float = TEXT_SLOPE) -> list[dict[str, str]]:
    """One POI (``category``, ``name``, ``description``) per entry of ``landcover``.

    ``landcover`` holds each POI's land-cover label, ``near_water`` whether it
    lies within 60 m of water; ``commercial`` is the region's character ``c``.
    ``text_slope`` sets how sharply the wording follows ``c`` (see the module
    docstring). Raises ``ValueError`` for a POI on water or an unknown label,
    for lengths that differ, and for a non-finite ``c``.
    """
    c = _finite(commercial)
    labels = list(landcover)
    wet = [bool(w) for w in near_water]
    if len(wet) != len(labels):
        raise ValueError(f"landcover has {len(labels)} entries but near_water {len(wet)}")
    lc = np.array([_landcover_index(label) for label in labels], dtype=np.intp)
    n = len(labels)
    if n == 0:
        return []

    # Category: inverse CDF of each land cover's weights at c.
    u_cat = rng.random(n)
    cats = np.empty(n, dtype=np.intp)
    for i in np.unique(lc):
        sel = lc == i
        cdf = np.cumsum(category_weights(POI_LANDCOVERS[i], c))
        cats[sel] = np.minimum(np.searchsorted(cdf, u_cat[sel] * cdf[-1], side="right"), len(cdf) - 1)

    # Text: 16 uniforms per POI. Columns 0-5 choose tiers, 6-15 items within pools.
    u = rng.random((n, 16))
    high = u[:, :6] < p_high(c, text_slope)
    u_items = u[:, 6:].tolist()
    high_rows = high.tolist()

    pois = []
    for k in range(n):
        category = POI_CATEGORIES[cats[k]]
        label = labels[k]
        h_adj, h_set, h_f, h_f2, h_stem, h_noun = high_rows[k]
        ut = u_items[k]
        adj = _pick(_ADJECTIVES[0 if h_adj else 1], ut[0])
        setting = _pick(_SETTINGS[0 if h_set else 1], ut[1])
        f_pool = _FEATURES[0 if h_f else 1]
        f2_pool = _FEATURES[0 if h_f2 else 1]
        fi = min(int(ut[2] * len(f_pool)), len(f_pool) - 1)
        f2i = min(int(ut[3] * len(f2_pool)), len(f2_pool) - 1)
        if h_f == h_f2 and fi == f2i:
            f2i = (f2i + 1) % len(f2_pool)
        noun = _PLAIN_NOUN[category]
        template = _pick(TEMPLATES, ut[4])
        description = template.format(
            A=_cap(_article(adj)), a=_article(adj), adj=adj, Adj=_cap(adj), noun=noun, Noun=_cap(noun),
            place=_pick(_PLACES[label], ut[5]), water=_NEAR_WATER if wet[k] else "",
            p=setting, P=_cap(setting), f=f_pool[fi], f2=f2_pool[f2i],
        )
        pois.append({
            "category": category,
            "name": _name(category, ut[6:10], h_stem, h_noun),
            "description": description,
        })
    return pois


def commercial_vocabulary_score(text: str) -> float:
    """``(high - low) / (high + low)`` over the words of ``text`` in :data:`HIGH_WORDS` / :data:`LOW_WORDS`; 0 if none."""
    words = _WORD.findall(text.lower())
    high = sum(w in HIGH_WORDS for w in words)
    low = sum(w in LOW_WORDS for w in words)
    return (high - low) / (high + low) if high + low else 0.0

"""The four configuration variants, as data (the seed's "Variants" table).

A variant names its priority events (flushed without waiting for a full batch, sent
first when the rate limit binds), extra event mappings for its vertical, and which
enrichments it fills in `custom_data`:
  products  content_ids, contents and single-product content fields (an order's value and
            num_items come from its products in every variant)
  search    search_string from `query` (travel also from `destination`)
  content   content_name / content_category for content engagement (titles, sections)
"""

from __future__ import annotations

import msgspec


class Variant(msgspec.Struct, frozen=True):
    key: str
    label: str
    use_case: str
    description: str
    priority_events: tuple[str, ...] | None  # None: every event is a priority event
    extra_mappings: dict[str, str]
    enrich: tuple[str, ...]

    def is_priority(self, event_name: str) -> bool:
        return self.priority_events is None or event_name in self.priority_events

    @property
    def mappings(self) -> dict[str, str]:
        """extra_mappings by name_key (case and surrounding spaces do not matter)."""
        return _keyed(self.key)


def _keyed(variant: str) -> dict[str, str]:
    found = _KEYED.get(variant)
    if found is None:
        found = _KEYED[variant] = {k.strip().casefold(): v for k, v in VARIANTS[variant].extra_mappings.items()}
    return found


_KEYED: dict[str, dict[str, str]] = {}


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant(
            key="default",
            label="Default",
            use_case="General event tracking",
            description="Standard event tracking and campaign optimisation.",
            priority_events=None,
            extra_mappings={},
            enrich=("products", "search"),
        ),
        Variant(
            key="retail",
            label="Retail",
            use_case="E-commerce / Shopping campaigns",
            description="E-commerce focused with checkout, add-to-cart, and product catalog "
            "events for Shopping campaigns.",
            # The seed's list, and the current names of the events it covered: Checkout
            # Started (initiate_checkout), Product Viewed (view_content), wishlists.
            priority_events=("checkout", "initiate_checkout", "add_to_cart", "add_to_wishlist", "page_visit", "search",
                             "view_category", "view_content"),
            extra_mappings={
                "Product List Filtered": "view_category",
                # Pinterest's own event for it, under the seed's names too (the seed's table has no
                # row for it: elsewhere it stays custom rather than count a second checkout).
                "Payment Info Entered": "add_payment_info",
            },
            enrich=("products", "search"),
        ),
        Variant(
            key="travel",
            label="Travel",
            use_case="Travel and hospitality",
            description="Search, booking, and destination events for travel-related campaigns.",
            # custom is a priority here: so are the events the seed's names left custom
            priority_events=("search", "page_visit", "checkout", "initiate_checkout", "lead", "custom",
                             "add_payment_info", "subscribe", "app_install"),
            extra_mappings={
                "Booking Completed": "checkout",
                "Destination Searched": "search",
                "Destination Viewed": "view_category",
            },
            enrich=("products", "search", "content"),
        ),
        Variant(
            key="media",
            label="Media",
            use_case="Media, publishing, subscriptions",
            description="Sign-up, lead, and content engagement events for awareness campaigns.",
            # custom is a priority here: so are the events the seed's names left custom
            priority_events=("signup", "lead", "subscribe", "page_visit", "watch_video", "custom",
                             "add_payment_info", "app_install"),
            extra_mappings={
                "Video Playback Started": "watch_video",
                "Video Content Playing": "watch_video",
                "Video Playback Completed": "watch_video",
                "Subscription Started": "subscribe",
            },
            enrich=("search", "content"),
        ),
    )
}
DEFAULT_VARIANT = "default"

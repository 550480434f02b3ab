"""Phones match across countries (issue 18): for every number `phonenumbers` considers valid, in
any region it knows, written the ways people write it, our hash is the SHA-256 of the digits
of its E.164 form (Pinterest's rule). The leading zero some countries keep (Italy, Côte
d'Ivoire, Congo, San Marino, Gabon) is where the first version went wrong."""

from __future__ import annotations

import hashlib

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.pinterest import normalize as norm
from delivery.pinterest.identity import IdentityBuilder

TYPES = (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE)
FORMATS = (phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164,
           phonenumbers.PhoneNumberFormat.RFC3966, phonenumbers.PhoneNumberFormat.NATIONAL)
WRAPPERS = ("{}", "Phone: {}", "{} (mobile)", " {} ", "tel:{}")


def valid_numbers() -> list[tuple[str, phonenumbers.PhoneNumber]]:
    """Every region's example fixed-line and mobile numbers, and neighbours of them that are valid too."""
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            for step in range(0, 7, 3):
                candidate = phonenumbers.PhoneNumber(country_code=example.country_code,
                                                     national_number=example.national_number + step,
                                                     italian_leading_zero=example.italian_leading_zero,
                                                     number_of_leading_zeros=example.number_of_leading_zeros)
                if phonenumbers.is_valid_number_for_region(candidate, region):
                    found.append((region, candidate))
    return found


NUMBERS = valid_numbers()
LEADING_ZERO_REGIONS = {"IT", "CI", "CG", "SM", "VA", "GA"}


def test_the_table_spans_the_world():
    regions = {region for region, _ in NUMBERS}
    assert len(regions) >= 200  # far more than the 30 the issue asks for
    assert LEADING_ZERO_REGIONS <= regions


@settings(max_examples=600, deadline=None)
@given(entry=st.sampled_from(NUMBERS), style=st.sampled_from(FORMATS), wrapper=st.sampled_from(WRAPPERS))
def test_every_valid_number_hashes_as_its_e164_digits(entry, style, wrapper):
    region, number = entry
    written = wrapper.format(phonenumbers.format_number(number, style))
    if style == phonenumbers.PhoneNumberFormat.NATIONAL and wrapper == "tel:{}":
        written = written.replace("tel:", "")  # a tel: URI always carries the country code
    e164_digits = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    builder = IdentityBuilder(region)  # national forms are read by the source's default country
    builder.add("ph", written)
    assert builder.values["ph"] == [hashlib.sha256(e164_digits.encode()).hexdigest()], (region, written)


def test_the_reported_numbers():
    assert norm.phone("+39 06 1234 5678") == "390612345678"
    assert norm.phone("06 1234 5678", "IT") == "390612345678"
    assert norm.phone("+225 07 12 34 56 78") == "2250712345678"
    for written in ("tel:+1-415-555-2671", "+1 415 555 2671 (mobile)", "Phone: +1 415 555 2671"):
        assert norm.phone(written) == "14155552671"

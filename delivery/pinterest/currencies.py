"""ISO 4217 currency codes, as data: `custom_data.currency` is sent only when it is one.

Pinterest's schema asks for "the ISO-4217 currency code" and otherwise counts the value in the
ad account's own currency, so a typo ("USX"), a made-up code ("BTC") or a word ("EUR" is fine,
"eur" is upper-cased first, "dollars" is not three letters) is left out with a warning rather
than sent. The table is ISO 4217's list one of active codes (2025), without XTS (for testing)
and XXX (no currency), plus four codes withdrawn since 2021 that shops in transition still
send (ANG, HRK, SLL, ZWL).
"""

from __future__ import annotations

ISO_4217 = frozenset("""
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN
BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH
UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD
XPF XPT XSU XUA YER ZAR ZMW ZWG
ANG HRK SLL ZWL
""".split())

"""stforecast: probabilistic forecasting and risk simulation for equity research.

Money is in RMB mn unless a name says otherwise (``target_price_hkd``); ratios are
fractions; days are days; fiscal years are labels ``FY18`` ... ``FY23``.
"""

__version__ = "0.1.0"

"""FaceLab core: detection, datasets, models, training, evaluation and prediction.

Everything here runs without Streamlit; the pages in ``pages/`` are thin adapters over it.
"""

__version__ = "0.1.0"

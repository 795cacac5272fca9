"""Figures that look inside speaker models (the ``viz`` extra: matplotlib, scikit-learn,
umap-learn; ``pip install 'speakerprint[viz]'``).

One module per kind of figure, each with pure functions that compute the data from arrays and
a ``plot_*`` function that draws it on a matplotlib ``Figure``; :func:`save_figure` writes PNG or
SVG by the extension. ``speakerprint plot <kind>`` runs each from the command line.

=================  ===========================================================================
scores             target/non-target histograms and DET curves (``plot_score_histograms``,
                   ``plot_det``: the stable API reports draw with)
projection         2-D projections of utterance embeddings, coloured by speaker, per model
attention          attentive-pooling weights over time, and how alike the channels attend
class_weights      cosine matrix of the AAM head's class weights through training
aam_scale          the lowest possible AAM-softmax loss against the scale s
enrollment_bias    inclusive against leave-one-out cosine with a speaker's mean
dimension          cosine of random vectors as the dimension grows
curves             loss, accuracy, learning rate, margin and dev EER of a run
report             Markdown/HTML evaluation reports of several systems (``speakerprint report``)
=================  ===========================================================================

matplotlib is imported when a figure is drawn, not with this package.
"""

from speakerprint.viz._common import FIGURE_FORMATS, figure_format, save_figure

__all__ = ["FIGURE_FORMATS", "figure_format", "save_figure"]

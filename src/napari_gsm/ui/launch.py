"""Open napari with the annotation widget docked and a project loaded."""

from __future__ import annotations

__all__ = ["launch", "find_widget", "DOCK_NAME"]

#: Name of the docked annotation widget (``viewer.window.dock_widgets[DOCK_NAME]``).
DOCK_NAME = "GSM annotation"


def launch(project_dir, model_path=None, viewer=None):
    """Open ``project_dir`` for annotation in napari.

    Parameters
    ----------
    project_dir : str or os.PathLike
        Folder of images and ``.pts`` files (see :class:`napari_gsm.ui.project.Project`).
    model_path : str or os.PathLike, optional
        A model to start from; default: the project's ``.napari-gsm/model.npz`` if any.
    viewer : napari.Viewer, optional
        Use this viewer instead of opening a new one.

    Returns
    -------
    napari.Viewer
        With the widget docked on the right; :func:`find_widget` returns it.

    Raises
    ------
    ValueError
        If the folder cannot be opened as a project (no images, unknown landmark count).
    """
    import napari

    from .widget import AnnotationWidget

    if viewer is None:
        viewer = napari.Viewer(title="napari-gsm")
    dock = None
    widget = viewer.window.dock_widgets.get(DOCK_NAME)
    if widget is None:  # launching again in the same viewer reuses its widget
        widget = AnnotationWidget(viewer)
        dock = viewer.window.add_dock_widget(widget, name=DOCK_NAME, area="right")
    try:
        # Unguarded, so that a folder that cannot be opened raises here.
        AnnotationWidget.open_project.__wrapped__(widget, project_dir, model_path)
    except Exception as exc:
        if dock is not None:
            viewer.window.remove_dock_widget(dock)
        raise ValueError(f"could not open {project_dir}: {exc}") from exc
    return viewer


def find_widget(viewer):
    """The :class:`~napari_gsm.ui.widget.AnnotationWidget` that :func:`launch` docked."""
    return viewer.window.dock_widgets[DOCK_NAME]

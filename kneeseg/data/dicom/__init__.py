"""DICOM series: discovery, grouping, slice ordering, geometry and pixel decoding.

This package needs only numpy and pydicom (2.4 or 3.x); it imports neither torch nor MONAI,
so it can be used by light-weight tools. The MONAI ``ImageReader`` built on it lives in
:mod:`kneeseg.data.dicom.monai_reader`; the rules that decide which series to segment in
:mod:`kneeseg.data.series_kind`.

Modules, in the order the data flows through them:

- :mod:`~kneeseg.data.dicom.volume`: the model, :class:`~kneeseg.data.dicom.volume.SeriesVolume`
  (slices in order, header facts, spacing, plane and affines; the array and affine convention),
  :class:`~kneeseg.data.dicom.volume.DiscoveryResult`, ``Problem``, ``DicomSeriesError``;
- :mod:`~kneeseg.data.dicom.tags`: tolerant readers of header values and of the selection facts
  (body part, ImageType, Siemens MOSAIC, diffusion b-value and direction, vendor private tags);
- :mod:`~kneeseg.data.dicom.headers`: which files to read, and the header facts of each slice;
- :mod:`~kneeseg.data.dicom.discovery`: grouping slices into volumes (series, echo, diffusion,
  acquisition), slice order and geometry checks: :func:`~kneeseg.data.dicom.discovery.discover_series`;
- :mod:`~kneeseg.data.dicom.loading`: choosing one volume and decoding its pixels:
  ``select_volume``, ``load_volume``, ``load_series``.

The public names are also available lazily from :mod:`kneeseg.data`.
"""

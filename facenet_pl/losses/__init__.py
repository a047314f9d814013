"""Losses over mined triplets."""

from facenet_pl.losses.triplet import TripletLoss, TripletStats

__all__ = ["TripletLoss", "TripletStats"]
